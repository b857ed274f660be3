"""User-facing errors: the CLI prints their message as one paragraph, no traceback, exit code 2."""


class TrainlabError(Exception):
    """A mistake the user can fix (bad config, missing file...). The message says what and how."""

    exit_code = 2


class ConfigError(TrainlabError):
    """An invalid config key or value, a missing recipe file."""


class DataError(TrainlabError):
    """Missing or malformed data files."""


class TrainingDiverged(TrainlabError):
    """The loss became NaN or infinite."""

    exit_code = 3

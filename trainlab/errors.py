"""User-facing errors: the CLI prints their message as one paragraph, no traceback, exit code 2."""


class TrainlabError(Exception):
    """A mistake the user can fix (bad config, missing file...). The message says what and how."""

    exit_code = 2


class ConfigError(TrainlabError):
    """An invalid config key or value, a missing recipe file."""


class DataError(TrainlabError):
    """Missing or malformed data files."""


class Interrupted(TrainlabError):
    """SIGINT/SIGTERM/SIGUSR1 stopped training: a checkpoint was saved (when the run has a
    checkpointer); rerun with run.resume=auto to continue. `exit_code` is 128 + the signal."""

    signum: int = 15  # SIGTERM
    checkpoint: object = None  # pathlib.Path of the checkpoint written, if any


class TrainingDiverged(TrainlabError):
    """The loss became NaN or infinite."""

    exit_code = 3

"""Methods by name (`method.name`). Importing this package registers every method."""

from trainlab.methods import supervised  # noqa: F401  (registers "supervised")
from trainlab.methods.base import Method, build_method, method_names

__all__ = ["Method", "build_method", "method_names"]

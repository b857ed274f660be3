"""Methods by name (`method.name`). Importing this package registers every method."""

from trainlab.methods import mae, probe, simclr, supervised  # noqa: F401  (register the methods)
from trainlab.methods.base import Method, build_method, method_names

__all__ = ["Method", "build_method", "method_names"]

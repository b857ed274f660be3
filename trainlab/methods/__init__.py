"""Methods by name (`method.name`). Importing this package registers every method."""

from trainlab.methods import (  # noqa: F401  (register the methods)
    dino,
    mae,
    probe,
    simclr,
    supervised,
)
from trainlab.methods.base import Method, build_method, method_names

__all__ = ["Method", "build_method", "method_names"]

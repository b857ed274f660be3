"""Data sources by name (`data.name`). Importing this package registers every source."""

from trainlab.data.sources import cifar, digits, folder, idx, npz  # noqa: F401  (registers them)
from trainlab.data.sources.base import (
    SOURCES,
    DataSplits,
    ImageFiles,
    Source,
    augment_defaults,
    get_source,
    load_data,
    make_splits,
    register_source,
    source_names,
    stratified_split,
    to_tensors,
)
from trainlab.data.sources.idx import find_idx_files, load_idx_set, read_idx

__all__ = [
    "SOURCES", "DataSplits", "ImageFiles", "Source", "augment_defaults",
    "find_idx_files", "get_source", "load_data", "load_idx_set", "make_splits", "read_idx",
    "register_source", "source_names", "stratified_split", "to_tensors",
]

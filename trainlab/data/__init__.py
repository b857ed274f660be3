"""Data: sources (digits, fashion-mnist), normalization stats, on-device batched augmentation."""

from trainlab.data.augment import (
    NEUTRAL_PARAMS,
    PARAM_COLUMNS,
    AugmentSpec,
    apply_augment,
    neutral_params,
    resolve_augment,
    sample_params,
)
from trainlab.data.sources import (
    SOURCES,
    DataSplits,
    augment_defaults,
    get_source,
    load_data,
    read_idx,
    source_names,
    stratified_split,
)
from trainlab.data.stats import channel_stats

__all__ = [
    "NEUTRAL_PARAMS",
    "PARAM_COLUMNS",
    "SOURCES",
    "AugmentSpec",
    "DataSplits",
    "apply_augment",
    "augment_defaults",
    "channel_stats",
    "get_source",
    "load_data",
    "neutral_params",
    "read_idx",
    "resolve_augment",
    "sample_params",
    "source_names",
    "stratified_split",
]

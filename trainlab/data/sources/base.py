"""Data sources by name (`data.name`): load a data set as uint8 tensors split into train/val/test.

Every source returns a `DataSplits` with images `x_*: uint8 [N, C, H, W]` (0..255) and labels
`y_*: int64 [N]`. Validation (and, without an official test split, test) samples are carved out
with a stratified split seeded by `data.split_seed`, so the same config always gives the same
splits, independent of `run.seed`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainlab.config.schema import DataConfig
from trainlab.config.validate import check_keys
from trainlab.data.convert import convert_images
from trainlab.data.sources.checks import check_splits, warn_classes
from trainlab.errors import ConfigError


class ImageFiles:
    """Images that stay on disk for the file-backed loader (decoded on demand, in workers).

    Interface every file-backed split offers: `len()`, `shape` = (N, C, H, W) after the
    data.channels / data.image_size conversion (H, W = 0 when sizes vary and no image_size is
    set), and `read(i) -> uint8 [C, H, W]` tensor.
    """

    shape: tuple[int, int, int, int]

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def read(self, i: int) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class DataSplits:
    """A data set split three ways. y: int64 [N] class ids; x: uint8 [N, C, H, W] in 0..255,
    in memory, or `ImageFiles` (file-backed folders too large for memory)."""

    name: str
    x_train: torch.Tensor | ImageFiles
    y_train: torch.Tensor
    x_val: torch.Tensor | ImageFiles
    y_val: torch.Tensor
    x_test: torch.Tensor | ImageFiles
    y_test: torch.Tensor
    class_names: list[str]
    carved: tuple[str, ...] = ("val",)  # splits carved out of train (sized by data.*_fraction)

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def height(self) -> int:
        return int(self.x_train.shape[2])

    @property
    def width(self) -> int:
        return int(self.x_train.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class Source:
    """A registered data set: its loader and its training-augmentation defaults."""

    load: Callable[[DataConfig], DataSplits]
    augment_defaults: dict[str, Any]
    summary: str


# ---------------------------------------------------------------------------------------------
# Stratified splitting
# ---------------------------------------------------------------------------------------------


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into (keep, holdout), holdout ~ `fraction` of every class.

    labels: int [N]. The holdout has exactly round(fraction * N) samples; each class gets
    floor(fraction * n_c) or one more (largest remainders first), so its share is within one
    sample of the expected count. Both index arrays are sorted; the result depends only on
    (labels, fraction, seed).
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    exact = fraction * counts.astype(np.float64)
    quota = np.floor(exact).astype(np.int64)
    missing = int(round(fraction * len(labels))) - int(quota.sum())
    if missing > 0:  # stable sort: ties go to the smaller class id
        order = np.argsort(-(exact - quota), kind="stable")
        quota[order[:missing]] += 1
    rng = np.random.default_rng(seed)
    holdout = []
    for cls, q in zip(classes, quota, strict=True):
        members = np.flatnonzero(labels == cls)
        holdout.append(rng.permutation(members)[:q])
    hold = np.sort(np.concatenate(holdout)) if holdout else np.empty(0, np.int64)
    keep_mask = np.ones(len(labels), dtype=bool)
    keep_mask[hold] = False
    return np.flatnonzero(keep_mask), hold


def to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """x: uint8 [N, C, H, W], y: int [N] -> contiguous torch tensors (uint8, int64)."""
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))


def make_splits(
    name: str,
    x_trainval: np.ndarray,
    y_trainval: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    cfg: DataConfig,
    class_names: list[str],
    carved: tuple[str, ...] = ("val",),
) -> DataSplits:
    """Carve a stratified validation split (`cfg.val_fraction`) out of train; wrap as tensors.
    `carved`: the splits cut out of the source's training images (val, and test for sources
    without an official test split), for the messages about empty splits."""
    keep, val = stratified_split(y_trainval, cfg.val_fraction, cfg.split_seed)
    x_tr, y_tr = to_tensors(x_trainval[keep], y_trainval[keep])
    x_va, y_va = to_tensors(x_trainval[val], y_trainval[val])
    x_te, y_te = to_tensors(x_test, y_test)
    return DataSplits(name, x_tr, y_tr, x_va, y_va, x_te, y_te, class_names, carved)


SOURCES: dict[str, Source] = {}


def register_source(
    name: str, augment_defaults: dict[str, Any], summary: str
) -> Callable[[Callable[[DataConfig], DataSplits]], Callable[[DataConfig], DataSplits]]:
    """Decorator: register a loader `(DataConfig) -> DataSplits` as `data.name=name`."""

    def deco(load: Callable[[DataConfig], DataSplits]) -> Callable[[DataConfig], DataSplits]:
        SOURCES[name] = Source(load, dict(augment_defaults), summary)
        return load

    return deco


def source_names() -> list[str]:
    """Valid `data.name` values, sorted."""
    return sorted(SOURCES)


def get_source(name: str) -> Source:
    """The registered source called `name`; ConfigError listing the valid names otherwise."""
    if name not in SOURCES:
        raise ConfigError(
            f"Unknown data.name={name!r}. Valid names: {', '.join(source_names())}."
        )
    return SOURCES[name]


def augment_defaults(name: str) -> dict[str, Any]:
    """The data set's training-augmentation defaults (keys as in DataConfig: crop_padding, ...)."""
    return dict(get_source(name).augment_defaults)


class SubsetFiles(ImageFiles):
    """Some images of a file-backed split: image i is `base.read(indices[i])`. Picklable."""

    def __init__(self, base: ImageFiles, indices: np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.shape = (len(self.indices), *base.shape[1:])

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, i: int) -> torch.Tensor:
        return self.base.read(int(self.indices[i]))


def labels_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced share of `labels` (int [N]).

    Each class c with n_c samples keeps max(1, floor(fraction * n_c + 0.5)) of them, drawn at
    random with `seed`; the draw is a prefix of one per-class permutation, so with the same
    seed a smaller fraction picks a subset of a larger one.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 1])  # independent of the val/test carve-out stream
    keep = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n = max(1, int(np.floor(fraction * len(members) + 0.5)))
        keep.append(rng.permutation(members)[:n])
    return np.sort(np.concatenate(keep)) if keep else np.empty(0, np.int64)


def _apply_labels_fraction(data: DataSplits, cfg: DataConfig) -> DataSplits:
    """Keep `data.labels_fraction` of every class of the training split (val/test untouched)."""
    f = cfg.labels_fraction
    if f == 1:
        return data
    idx = labels_subset(data.y_train.numpy(), f, cfg.split_seed)
    x = data.x_train
    x_sub = x[torch.from_numpy(idx)] if isinstance(x, torch.Tensor) else SubsetFiles(x, idx)
    return dataclasses.replace(data, x_train=x_sub, y_train=data.y_train[torch.from_numpy(idx)])


def check_data(data: DataSplits, cfg: DataConfig) -> None:
    """DataError for data nothing sensible can be trained on; warnings for odd labels (see
    trainlab.data.sources.checks)."""
    ys = {s: getattr(data, f"y_{s}").numpy() for s in ("train", "val", "test")}
    check_splits(ys, data.class_names, data.carved, cfg)
    warn_classes(ys, data.class_names, data.carved, cfg)


def load_data(cfg: DataConfig) -> DataSplits:
    """Load the data set `cfg.name` and split it into train/val/test (see module docstring).

    Then apply the conversion at load to every in-memory split: data.image_size (resize to
    N x N) and data.channels (grey <-> RGB), see trainlab.data.convert. File-backed splits
    (`ImageFiles`) convert as they read, so they pass through unchanged. Last, with
    data.labels_fraction < 1, the training split keeps that share of each class
    (`labels_subset`, seeded by data.split_seed). Before that, `check_data` refuses splits
    that cannot mean anything (one class, an empty split) and warns about classes without images.
    """
    source = get_source(cfg.name)
    # the schema's rules (a DataConfig may come here without `check_config`, e.g. data inspect)
    check_keys(cfg, "data", "val_fraction", "test_fraction", "split_seed", "labels_fraction",
               "image_size", "channels")
    data = source.load(cfg)
    check_data(data, cfg)
    converted = {
        f"x_{s}": convert_images(x, cfg.image_size, cfg.channels)
        for s in ("train", "val", "test")
        if isinstance(x := getattr(data, f"x_{s}"), torch.Tensor)
    }
    return _apply_labels_fraction(dataclasses.replace(data, **converted), cfg)

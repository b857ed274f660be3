"""Checks every loaded data set passes before anything trains on it (any source).

Refused (DataError): fewer than two classes, or training images of fewer than two classes; an
empty training split; an empty validation split when data.val_fraction > 0 asked for one; an
empty test split. Warned about (one `trainlab: warning:` line on stderr, the run goes on): class
ids with no image at all (labels that are not 0..K-1, e.g. {0, 5000} -> 5001 classes), and
classes whose images all went to val/test when they were carved out of train.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from trainlab.config.schema import DataConfig
from trainlab.errors import DataError


def warn(message: str) -> None:
    """One line for the user on stderr, `trainlab: warning: <message>`; the run goes on."""
    print(f"trainlab: warning: {' '.join(message.split())}", file=sys.stderr, flush=True)


def origin(cfg: DataConfig) -> str:
    """Where the data came from, for messages: `data.name=X (data.root=/path)`."""
    return f"data.name={cfg.name}" + (f" (data.root={cfg.root})" if cfg.root else "")


def _list(names: list[str], ids: np.ndarray, limit: int = 5) -> str:
    """'a', 'b', 'c' (+ 7 more) for class ids `ids`."""
    shown = ", ".join(repr(names[int(i)]) for i in ids[:limit])
    return shown + (f" (+ {len(ids) - limit} more)" if len(ids) > limit else "")


def _at_least(n: int) -> str:
    """The smallest fraction (2 significant digits, rounded up) that holds out 1 of n images."""
    f = 1.0 / max(n, 1)
    scale = 10 ** (1 - math.floor(math.log10(f)))
    return f"{math.ceil(f * scale - 1e-9) / scale:g}"


def _carving(cfg: DataConfig, carved: tuple[str, ...], n: dict[str, int]) -> str:
    """Which data.*_fraction keys moved how many training images where."""
    parts = []
    if "test" in carved:
        parts.append(f"data.test_fraction={cfg.test_fraction:g} moved {n['test']} to test")
    if "val" in carved:
        parts.append(f"data.val_fraction={cfg.val_fraction:g} moved {n['val']} to validation")
    return "; ".join(parts)


def check_split_sizes(ys: dict[str, np.ndarray], carved: tuple[str, ...],
                      cfg: DataConfig) -> None:
    """DataError for an empty train split, an empty test split, or an empty val split that
    data.val_fraction > 0 asked for. ys: int [N] labels per split ('train', 'val', 'test');
    carved: the splits that were carved out of train (so their size follows a fraction key)."""
    n = {s: len(y) for s, y in ys.items()}
    where = origin(cfg)
    counts = f"train/val/test = {n['train']}/{n['val']}/{n['test']} images"
    pool = n["train"] + sum(n[s] for s in carved)  # images in train before carving
    if n["train"] == 0:
        if pool == 0:
            raise DataError(f"{where} has no training images ({counts}). Add images to the "
                            f"training split of the data set.")
        raise DataError(
            f"{where}: the training split is empty after carving ({counts}): of the {pool} "
            f"training images, {_carving(cfg, carved, n)}, leaving none to train on. Lower "
            f"data.val_fraction (e.g. data.val_fraction=0.1) or data.test_fraction, or add "
            f"images; data.labels_fraction={cfg.labels_fraction:g} then keeps a share of what "
            f"is left (at least one image per class).")
    if n["test"] == 0:
        if "test" in carved:
            raise DataError(
                f"{where}: data.test_fraction={cfg.test_fraction:g} of {pool} images rounds to "
                f"0, so there would be no test split ({counts}). Set data.test_fraction to at "
                f"least {_at_least(pool)}, or add images.")
        raise DataError(f"{where} has no test images ({counts}); the test split is where the "
                        f"final accuracy is measured. Add held-out images to it.")
    if n["val"] == 0 and "val" in carved and cfg.val_fraction > 0:
        left = n["train"]
        raise DataError(
            f"{where}: data.val_fraction={cfg.val_fraction:g} of the {left} training images "
            f"rounds to 0, so there would be no validation split ({counts}). Set "
            f"data.val_fraction=0 to train without validation, or at least "
            f"data.val_fraction={_at_least(left)} to hold out one image.")


class _Counts:
    """Images per class and split. count[split]: int [K]; in_carved / total: int [K]."""

    def __init__(self, ys: dict[str, np.ndarray], k: int, carved: tuple[str, ...]) -> None:
        self.count = {s: np.bincount(y, minlength=k) if len(y) else np.zeros(k, np.int64)
                      for s, y in ys.items()}
        self.sizes = {s: len(y) for s, y in ys.items()}
        self.in_carved = sum((self.count[s] for s in carved), np.zeros(k, np.int64))
        self.total = self.count["train"] + self.count["val"] + self.count["test"]
        self.carved_away = np.flatnonzero((self.count["train"] == 0) & (self.in_carved > 0))


def check_classes(ys: dict[str, np.ndarray], class_names: list[str], carved: tuple[str, ...],
                  cfg: DataConfig) -> None:
    """DataError for fewer than two classes, in all or with training images.
    ys: int [N] labels per split, each in 0..len(class_names)-1."""
    where, k = origin(cfg), len(class_names)
    if k < 2:
        raise DataError(
            f"{where} has {k} class{'' if k == 1 else 'es'}"
            f"{' (' + repr(class_names[0]) + ')' if k == 1 else ''}; a classifier needs at "
            f"least two, and with one every prediction would be right. Add images of at least "
            f"one more class.")
    c = _Counts(ys, k, carved)
    in_train = np.flatnonzero(c.count["train"])
    if len(in_train) < 2:
        away = c.carved_away
        how = (f" after carving ({_carving(cfg, carved, c.sizes)}; the images of "
               f"{_list(class_names, away)} all went there)") if len(away) else ""
        raise DataError(
            f"{where}: the training split holds images of only one class "
            f"({_list(class_names, in_train)}){how}; a classifier needs at least two. Add "
            f"training images of another class{', or lower the fractions' if len(away) else ''}.")


def check_splits(ys: dict[str, np.ndarray], class_names: list[str], carved: tuple[str, ...],
                 cfg: DataConfig) -> None:
    """`check_split_sizes` then `check_classes`: every DataError, no warning."""
    check_split_sizes(ys, carved, cfg)
    check_classes(ys, class_names, carved, cfg)


def warn_classes(ys: dict[str, np.ndarray], class_names: list[str], carved: tuple[str, ...],
                 cfg: DataConfig) -> None:
    """Warnings for class ids without any image, classes left without a training image by
    carving, and classes with val/test images only. ys: int [N] labels per split."""
    where, k = origin(cfg), len(class_names)
    c = _Counts(ys, k, carved)
    empty = np.flatnonzero(c.total == 0)
    if len(empty):
        warn(f"{where}: labels use {k - len(empty)} of the {k} class ids 0..{k - 1}, so the "
             f"model gets {k} classes, {len(empty)} of which have no image (e.g. "
             f"{_list(class_names, empty, 3)}). Renumber the labels 0..K-1 (e.g. with "
             f"np.unique(y, return_inverse=True)) unless this is intended.")
    if len(c.carved_away):
        warn(f"{where}: {len(c.carved_away)} class(es) have no training image left after "
             f"carving ({_list(class_names, c.carved_away)}): "
             f"{_carving(cfg, carved, c.sizes)}. The model cannot learn them; add training "
             f"images or lower the fractions.")
    untrained = np.flatnonzero((c.count["train"] == 0) & (c.in_carved == 0) & (c.total > 0))
    if len(untrained):
        warn(f"{where}: {len(untrained)} class(es) have test or validation images but no "
             f"training image ({_list(class_names, untrained)}); the model cannot learn them. "
             f"Add training images of them.")

"""Any image set saved with `np.savez`: `data.name=npz data.root=/path/to/file.npz`.

Arrays: `x_train`, `y_train`, `x_test`, `y_test` (required) and `class_names` (optional, 1-D
strings). Images are uint8 0..255 in one of three layouts, told apart by shape (see
`to_nchw`); labels are integers in [0, K), K = len(class_names) if given, else max label + 1
(at most MAX_CLASSES; ids without images are warned about, see trainlab.data.sources.checks).
Refused: empty x_train / x_test, fewer than two classes, labels that are not integers >= 0.
The file is opened with `allow_pickle=False`, so loading it never runs code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from trainlab.config.schema import DataConfig
from trainlab.data.sources.base import DataSplits, make_splits, register_source
from trainlab.errors import DataError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
MAX_CLASSES = 100_000  # labels above this without class_names are a mistake, not class ids
_CHANNELS = (1, 3)


def to_nchw(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Images in any supported layout -> uint8 [N, C, H, W].

    Layout rule, by shape:
      - 3-D [N, H, W]: grey, a channel axis is added -> [N, 1, H, W].
      - 4-D with axis 1 in {1, 3}: NCHW, kept as is. This includes the ambiguous case where
        axis 3 is also 1 or 3 (e.g. [N, 3, 32, 3]): NCHW, trainlab's own layout, wins.
      - 4-D with axis 3 in {1, 3} (and axis 1 not): NHWC, transposed to NCHW.
      - anything else: DataError (no axis can be the channel axis).
    """
    if x.dtype != np.uint8:
        raise _dtype_error(x, path, key)
    if x.ndim in (3, 4) and (x.shape[-1] == 0 or x.shape[-2] == 0 or x.shape[1] == 0):
        raise DataError(f"{path}: array {key!r} has shape {x.shape}: images of zero size. Save "
                        "images as [N, H, W], [N, C, H, W] or [N, H, W, C] with H, W >= 1.")
    if x.ndim == 3:
        return x[:, None]  # [N, H, W] -> [N, 1, H, W]
    if x.ndim == 4 and x.shape[1] in _CHANNELS:
        return x
    if x.ndim == 4 and x.shape[3] in _CHANNELS:
        return x.transpose(0, 3, 1, 2)  # [N, H, W, C] -> [N, C, H, W]
    raise DataError(
        f"{path}: array {key!r} has shape {x.shape}; cannot tell its layout. Save images as "
        "[N, H, W] (grey), [N, C, H, W] or [N, H, W, C] with C = 1 or 3 channels."
    )


def _dtype_error(x: np.ndarray, path: Path, key: str) -> DataError:
    """The DataError for images that are not uint8: what the values are and how to convert."""
    head = f"{path}: array {key!r} is {x.dtype}, but images must be uint8 0..255"
    if x.dtype.kind not in "biuf" or x.size == 0:
        return DataError(f"{head}. Save the images as a uint8 array.")
    bad = int(np.count_nonzero(~np.isfinite(x))) if x.dtype.kind == "f" else 0
    finite = x[np.isfinite(x)] if bad else x
    if bad and not finite.size:
        return DataError(f"{head}; every value is NaN or infinite. Check how it was made.")
    lo, hi = finite.min().item(), finite.max().item()
    seen = f" (values {lo:g}..{hi:g}{f', {bad:,} NaN or infinite' if bad else ''})"
    if x.dtype.kind == "b":
        fix = "convert it before saving, e.g. `x.astype(np.uint8) * 255`"
    elif bad:
        fix = ("replace the NaN/infinite pixels first (e.g. np.nan_to_num), then convert to "
               "uint8")
    elif 0 <= lo and hi <= 1 and x.dtype.kind == "f":
        fix = "convert it before saving, e.g. `(x * 255).round().astype(np.uint8)`"
    elif 0 <= lo and hi <= 255:
        fix = ("convert it before saving, e.g. `x.round().astype(np.uint8)`" if x.dtype.kind ==
               "f" else "convert it before saving, e.g. `x.astype(np.uint8)`")
    else:
        fix = ("its values are outside 0..255 (normalized? undo the normalization), then "
               "convert, e.g. `x.clip(0, 255).round().astype(np.uint8)`")
    return DataError(f"{head}{seen}; {fix}.")


def _labels(y: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    """Check a label array: 1-D integers, one per image, none negative -> int64 [N]."""
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: array {key!r} has shape {y.shape}, expected [{n}] (one label "
                        "per image).")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: array {key!r} is {y.dtype}; labels must be integers 0..K-1. "
                        "Convert with `.astype(np.int64)` before saving.")
    if n and int(y.min()) < 0:
        raise DataError(f"{path}: array {key!r} has the negative label {int(y.min())}; labels "
                        "must be integers 0..K-1.")
    return y.astype(np.int64)


def _class_names(arrays: dict[str, np.ndarray], path: Path) -> list[str] | None:
    if "class_names" not in arrays:
        return None
    names = arrays["class_names"]
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(f"{path}: array 'class_names' is {names.dtype} {names.shape}; save it as "
                        "a 1-D string array, e.g. np.array(['cat', 'dog']).")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of a .npz file, loaded with allow_pickle=False; DataError naming the file."""
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise DataError(f"{path} holds a single array (.npy); data.name=npz needs a .npz "
                            "archive: np.savez(path, x_train=..., y_train=..., ...).")
        with f:
            present = list(f.files)
            missing = [k for k in REQUIRED if k not in present]
            if missing:
                raise DataError(
                    f"{path} lacks the arrays {', '.join(missing)}. It has: "
                    f"{', '.join(present) or 'nothing'}; required: {', '.join(REQUIRED)} "
                    "(and optionally class_names)."
                )
            return {k: f[k] for k in (*REQUIRED, "class_names") if k in present}
    except FileNotFoundError as e:
        raise DataError(f"data.root={path} does not exist; data.name=npz needs the path of a .npz "
                        "file with x_train, y_train, x_test, y_test.") from e
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        hint = " (object arrays need pickle; save plain numeric and string arrays)" if (
            "pickle" in str(e)) else ""
        raise DataError(f"Cannot read {path} as a .npz file{hint}: {e}. Write it again with "
                        "np.savez or np.savez_compressed.") from e


@register_source(
    "npz",
    dict(crop_padding=0, flip=False, rotate_deg=0.0, brightness=0.0, contrast=0.0),
    "your own arrays in a .npz file (data.root=file.npz); augmentation off unless set",
)
def load_npz(cfg: DataConfig) -> DataSplits:
    """Images and labels from `data.root` (a .npz file, see module docstring); validation is
    carved out of x_train with data.val_fraction."""
    if not cfg.root:
        raise DataError("data.name=npz needs data.root=/path/to/file.npz (a file with the arrays "
                        "x_train, y_train, x_test, y_test and optionally class_names).")
    path = Path(cfg.root).expanduser()
    arrays = read_npz(path)
    x_tr, x_te = (to_nchw(arrays[k], path, k) for k in ("x_train", "x_test"))
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{path}: x_train images are {list(x_tr.shape[1:])} (C, H, W) but x_test "
                        f"images are {list(x_te.shape[1:])}; both splits must match.")
    for key, x in (("x_train", x_tr), ("x_test", x_te)):
        if len(x) == 0:
            raise DataError(f"{path}: array {key!r} holds no images (shape {x.shape}); "
                            f"{'training' if key == 'x_train' else 'the final test accuracy'} "
                            "needs some. Save a non-empty array.")
    y_tr = _labels(arrays["y_train"], len(x_tr), path, "y_train")
    y_te = _labels(arrays["y_test"], len(x_te), path, "y_test")
    names = _class_names(arrays, path)
    top = max(int(y_tr.max()), int(y_te.max()))
    if names is None:
        if top >= MAX_CLASSES:
            key = "y_train" if int(y_tr.max()) == top else "y_test"
            raise DataError(
                f"{path}: array {key!r} has the label {top}, which would make {top + 1:,} "
                f"classes (labels are class ids 0..K-1). Renumber the labels 0..K-1, e.g. "
                f"`np.unique(y, return_inverse=True)`, or save class_names for up to "
                f"{MAX_CLASSES:,} classes.")
        names = [str(i) for i in range(top + 1)]
    elif len(names) < 2:
        raise DataError(f"{path}: array 'class_names' lists {len(names)} class(es); a "
                        "classifier needs at least two. Save images and labels of two or more "
                        "classes.")
    for key, y in (("y_train", y_tr), ("y_test", y_te)):
        if int(y.max()) >= len(names):
            raise DataError(f"{path}: array {key!r} has label {int(y.max())}, but class_names "
                            f"lists {len(names)} classes (labels 0..{len(names) - 1}).")
    if len(distinct := np.unique(y_tr)) < 2:
        raise DataError(
            f"{path}: every label in 'y_train' is {int(distinct[0])}, so there is one class; a "
            "classifier needs at least two (with one, every prediction is right). Save "
            "training images of two or more classes, labelled 0..K-1.")
    return make_splits("npz", x_tr, y_tr, x_te, y_te, cfg, names)

"""Data sources by name (`data.name`): load a data set as uint8 tensors split into train/val/test.

Every source returns a `DataSplits` with images `x_*: uint8 [N, C, H, W]` (0..255) and labels
`y_*: int64 [N]`. Validation (and, without an official test split, test) samples are carved out
with a stratified split seeded by `data.split_seed`, so the same config always gives the same
splits, independent of `run.seed`.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainlab.config.schema import DataConfig
from trainlab.errors import ConfigError, DataError


@dataclass
class DataSplits:
    """A data set split three ways. x: uint8 [N, C, H, W] in 0..255; y: int64 [N] class ids."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]

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


def _check_fraction(value: float, key: str, allow_zero: bool) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise ConfigError(f"{key}={value} is out of range: it must be in {bound}.")


def _to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """x: uint8 [N, C, H, W], y: int [N] -> contiguous torch tensors (uint8, int64)."""
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))


def _make_splits(
    name: str,
    x_trainval: np.ndarray,
    y_trainval: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    cfg: DataConfig,
    class_names: list[str],
) -> DataSplits:
    """Carve a stratified validation split (`cfg.val_fraction`) out of train; wrap as tensors."""
    keep, val = stratified_split(y_trainval, cfg.val_fraction, cfg.split_seed)
    x_tr, y_tr = _to_tensors(x_trainval[keep], y_trainval[keep])
    x_va, y_va = _to_tensors(x_trainval[val], y_trainval[val])
    x_te, y_te = _to_tensors(x_test, y_test)
    return DataSplits(name, x_tr, y_tr, x_va, y_va, x_te, y_te, class_names)


# ---------------------------------------------------------------------------------------------
# IDX files (MNIST family)
# ---------------------------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_REFETCH = "Re-download the file (or reinstall the package that ships it)."


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it is gzip-compressed (by content, not by name)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"Cannot read IDX file {path}: {e.strerror or e}.") from e
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"IDX file {path} is a truncated or corrupt gzip file ({e}). {_REFETCH}"
        ) from e


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or .gz), as used by MNIST and Fashion-MNIST.

    Format: magic = 0x00 0x00 <dtype code> <ndim>, then ndim big-endian uint32 sizes, then the
    values in C order, big-endian. Returns a writable native-endian array of shape `sizes`
    (uint8 for image and label files). Raises DataError naming the file if the magic number,
    dtype code or size does not match.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path} is not an IDX file (wrong magic number {data[:4].hex() or 'empty'}; "
            f"expected 0000<dtype><ndim>). {_REFETCH}"
        )
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {path} is truncated inside its header. {_REFETCH}")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {what}: shape {shape} needs {expected} bytes, "
            f"found {len(data)}. {_REFETCH}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


def _load_digits(cfg: DataConfig) -> DataSplits:
    """UCI digits from scikit-learn: 1,797 images 1x8x8, values 0..16 rescaled to 0..255."""
    from sklearn.datasets import load_digits

    _check_fraction(cfg.test_fraction, "data.test_fraction", allow_zero=False)
    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [1797, 1, 8, 8]
    y = bunch.target.astype(np.int64)
    rest, test = stratified_split(y, cfg.test_fraction, cfg.split_seed)
    names = [str(i) for i in range(10)]
    return _make_splits("digits", x[rest], y[rest], x[test], y[test], cfg, names)


FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def find_idx_files(root: Path, torchvision_dir: str) -> dict[str, Path] | None:
    """The four MNIST-style IDX files in `root` or `root/<torchvision_dir>/raw`, or None.

    Each file may be gzip-compressed (`name.gz`) or plain (`name`); a folder is used only if it
    holds all four.
    """
    for folder in (root, root / torchvision_dir / "raw"):
        found = {}
        for key, stem in _MNIST_FILES.items():
            for candidate in (folder / f"{stem}.gz", folder / stem):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(_MNIST_FILES):
            return found
    return None


def _missing_files_error(data_set: str, root: Path, torchvision_dir: str, how: str) -> DataError:
    looked = [root, root / torchvision_dir / "raw"]
    lines = []
    for folder in looked:
        if not folder.is_dir():
            lines.append(f"  {folder} (folder does not exist)")
            continue
        missing = [s for s in _MNIST_FILES.values()
                   if not (folder / s).is_file() and not (folder / f"{s}.gz").is_file()]
        lines.append(f"  {folder} (missing, as .gz or plain: {', '.join(missing)})")
    return DataError(
        f"{data_set} files not found. Looked in:\n" + "\n".join(lines) + f"\nTo get them: {how}"
    )


def load_idx_set(
    files: dict[str, Path], image_size: tuple[int, int], num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read and check an MNIST-style set: (x_train, y_train, x_test, y_test), x uint8 [N,1,H,W]."""
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        xf, yf = files[f"{split}_images"], files[f"{split}_labels"]
        if x.ndim != 3 or x.shape[1:] != image_size or x.dtype != np.uint8:
            raise DataError(f"{xf} holds {x.dtype} images of shape {x.shape}, expected uint8 "
                            f"[N, {image_size[0]}, {image_size[1]}]. {_REFETCH}")
        if y.ndim != 1 or len(y) != len(x) or y.dtype != np.uint8:
            raise DataError(f"{yf} holds {y.dtype} labels of shape {y.shape}, expected uint8 "
                            f"[{len(x)}] to match {xf.name}. {_REFETCH}")
        if len(y) and int(y.max()) >= num_classes:
            raise DataError(f"{yf} has label {int(y.max())}, expected 0..{num_classes - 1}. "
                            f"{_REFETCH}")
    return (arrays["train_images"][:, None], arrays["train_labels"].astype(np.int64),
            arrays["test_images"][:, None], arrays["test_labels"].astype(np.int64))


def _load_fashion_mnist(cfg: DataConfig) -> DataSplits:
    """Fashion-MNIST from its four IDX files: 60,000 train + 10,000 test images, 1x28x28."""
    root = Path(cfg.root or FASHION_MNIST_ROOT).expanduser()
    files = find_idx_files(root, "FashionMNIST")
    if files is None:
        how = (
            "on Debian/Ubuntu run `apt-get install dataset-fashion-mnist` (files land in "
            f"{FASHION_MNIST_ROOT}); or download train-images-idx3-ubyte.gz, "
            "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
            "from https://github.com/zalandoresearch/fashion-mnist into a folder and pass "
            "data.root=/that/folder."
        )
        raise _missing_files_error("Fashion-MNIST", root, "FashionMNIST", how)
    x_tr, y_tr, x_te, y_te = load_idx_set(files, (28, 28), len(FASHION_MNIST_CLASSES))
    return _make_splits("fashion-mnist", x_tr, y_tr, x_te, y_te, cfg, FASHION_MNIST_CLASSES)


SOURCES: dict[str, Source] = {
    "digits": Source(
        _load_digits,
        dict(crop_padding=1, flip=False, rotate_deg=10.0, brightness=0.2, contrast=0.2),
        "UCI handwritten digits (scikit-learn), 1,797 images 1x8x8, 10 classes",
    ),
    "fashion-mnist": Source(
        _load_fashion_mnist,
        dict(crop_padding=2, flip=True, rotate_deg=0.0, brightness=0.0, contrast=0.0),
        "Fashion-MNIST IDX files, 60,000 + 10,000 images 1x28x28, 10 classes",
    ),
}


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


def load_data(cfg: DataConfig) -> DataSplits:
    """Load the data set `cfg.name` and split it into train/val/test (see module docstring)."""
    source = get_source(cfg.name)
    _check_fraction(cfg.val_fraction, "data.val_fraction", allow_zero=True)
    return source.load(cfg)

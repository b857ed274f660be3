"""IDX files (the MNIST family): a reader and the mnist / fashion-mnist sources built on it."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from trainlab.config.schema import DataConfig
from trainlab.data.download import REMOTES, default_root, ensure_downloaded
from trainlab.data.sources.base import DataSplits, make_splits, register_source
from trainlab.errors import DataError

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
    count = math.prod(shape)  # exact: a damaged header can claim more than int64 holds
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {what}: shape {shape} needs {expected} bytes, "
            f"found {len(data)}. {_REFETCH}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


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


def _missing_files_error(
    data_set: str, roots: list[Path], torchvision_dir: str, how: str
) -> DataError:
    looked = [folder for root in roots for folder in (root, root / torchvision_dir / "raw")]
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


def _locate_idx(cfg: DataConfig, name: str, title: str, torchvision_dir: str,
                system_root: str | None, how: str) -> dict[str, Path]:
    """The four IDX files of `name`: in data.root (or, unset, `system_root` and then the download
    folder), fetched into that folder first when data.download is set and they are missing."""
    if cfg.root:
        roots = [Path(cfg.root).expanduser()]
    else:
        roots = [Path(system_root)] if system_root else []
        roots.append(default_root(name))
    for root in roots:
        if (files := find_idx_files(root, torchvision_dir)) is not None:
            return files
    target = roots[-1]  # data.root, or the download folder
    if cfg.download:
        ensure_downloaded(name, target)
        if (files := find_idx_files(target, torchvision_dir)) is not None:
            return files
    raise _missing_files_error(title, roots, torchvision_dir, how)


@register_source(
    "fashion-mnist",
    dict(crop_padding=2, flip=True, rotate_deg=0.0, brightness=0.0, contrast=0.0),
    "Fashion-MNIST IDX files, 60,000 + 10,000 images 1x28x28, 10 classes",
)
def load_fashion_mnist(cfg: DataConfig) -> DataSplits:
    """Fashion-MNIST from its four IDX files: 60,000 train + 10,000 test images, 1x28x28.

    Unset data.root: the Debian package folder, then the download folder (`default_root`)."""
    how = (
        "on Debian/Ubuntu run `apt-get install dataset-fashion-mnist` (files land in "
        f"{FASHION_MNIST_ROOT}); or set data.download=true; or download "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        "t10k-labels-idx1-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist into a "
        "folder and pass data.root=/that/folder."
    )
    files = _locate_idx(cfg, "fashion-mnist", "Fashion-MNIST", "FashionMNIST",
                        FASHION_MNIST_ROOT, how)
    x_tr, y_tr, x_te, y_te = load_idx_set(files, (28, 28), len(FASHION_MNIST_CLASSES))
    return make_splits("fashion-mnist", x_tr, y_tr, x_te, y_te, cfg, FASHION_MNIST_CLASSES)


@register_source(
    "mnist",
    dict(crop_padding=2, flip=False, rotate_deg=10.0, brightness=0.0, contrast=0.0),
    "MNIST handwritten digits, IDX files, 60,000 + 10,000 images 1x28x28, 10 classes",
)
def load_mnist(cfg: DataConfig) -> DataSplits:
    """MNIST from its four IDX files (.gz or plain) in data.root or data.root/MNIST/raw:
    60,000 train + 10,000 test images, 1x28x28. Unset data.root: the download folder."""
    how = (
        "set data.download=true; or download train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
        f"from {REMOTES['mnist'].mirrors[0]} into a folder and pass data.root=/that/folder."
    )
    files = _locate_idx(cfg, "mnist", "MNIST", "MNIST", None, how)
    x_tr, y_tr, x_te, y_te = load_idx_set(files, (28, 28), 10)
    return make_splits("mnist", x_tr, y_tr, x_te, y_te, cfg, [str(i) for i in range(10)])

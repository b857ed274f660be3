"""CIFAR-10 and CIFAR-100 from the official "python version" pickle batches.

Layout (as the official archives unpack; `data.root` may also point at the folder itself):
`root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}` and
`root/cifar-100-python/{train, test, meta}`. A batch is a dict with `data`: uint8 [N, 3072]
(each row the R plane, then G, then B, each 32x32 row-major) and `labels` (CIFAR-10) or
`fine_labels` / `coarse_labels` (CIFAR-100). Unset `data.root` means the download folder
`trainlab.data.download.default_root(name)`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from trainlab.config.schema import DataConfig
from trainlab.data.download import REMOTES, default_root, ensure_downloaded
from trainlab.data.sources.base import DataSplits, make_splits, register_source
from trainlab.errors import DataError

try:  # numpy >= 2 moved numpy.core to numpy._core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

_CIFAR_AUGMENT = dict(crop_padding=4, flip=True, rotate_deg=0.0, brightness=0.0, contrast=0.0)
_REFETCH = ("Re-download it (data.download=true, after deleting the file) or re-extract it from "
            "the official archive.")

# Pickle files can run arbitrary code when loaded: every global a pickle names is imported and
# called by the unpickler. The official CIFAR files (written by Python 2 cPickle) contain only
# dicts, lists, ints and byte strings plus numpy arrays, and a numpy array is rebuilt from exactly
# three globals: `numpy.core.multiarray._reconstruct(ndarray, shape, dtype)`, `numpy.ndarray` and
# `numpy.dtype`. Those rebuild an array from bytes and run nothing else, so they are the only
# globals allowed (with `numpy._core...`, the name numpy >= 2 writes when a batch is re-pickled).
# Any other global (os.system, builtins.eval, ...) is refused before it is imported.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle named a global outside `_ALLOWED_GLOBALS`."""


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only `_ALLOWED_GLOBALS` (no imports, no arbitrary callables)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(f"{module}.{name}") from None


def load_pickle(path: Path) -> dict[Any, Any]:
    """Load a CIFAR pickle (a dict) with the restricted unpickler, `encoding="bytes"`.

    Keys and strings come back as bytes, as in the official files. Raises DataError naming the
    file when it is missing, truncated, corrupt, not a dict, or names a forbidden global.
    """
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except ForbiddenGlobal as e:
        raise DataError(
            f"Refusing to load {path}: the pickle refers to the Python global {e}, which a CIFAR "
            "file never contains (loading it could run code). Replace the file with the official "
            f"one. {_REFETCH}"
        ) from None
    except OSError as e:
        raise DataError(f"Cannot read CIFAR file {path}: {e.strerror or e}.") from e
    except Exception as e:  # truncated or corrupt: EOFError, UnpicklingError, ValueError, ...
        raise DataError(
            f"CIFAR file {path} is truncated or corrupt ({type(e).__name__}: {e}). {_REFETCH}"
        ) from e
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR file {path} holds a {type(obj).__name__}, expected a dict. "
                        f"{_REFETCH}")
    return obj


def _get(d: dict[Any, Any], key: str, path: Path) -> Any:
    """d[b"key"] (official files), or d["key"] (files re-pickled with str keys)."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    present = ", ".join(k.decode() if isinstance(k, bytes) else str(k) for k in d)
    raise DataError(f"CIFAR file {path} has no entry {key!r} (it has: {present or 'nothing'}). "
                    f"{_REFETCH}")


def _names(meta: dict[Any, Any], key: str, path: Path) -> list[str]:
    """The class names under `key` of a meta file: a list of byte or text strings."""
    names = _get(meta, key, path)
    if not (isinstance(names, (list, tuple)) and names
            and all(isinstance(n, (bytes, str)) for n in names)):
        raise DataError(f"CIFAR file {path}: {key!r} is {type(names).__name__} "
                        f"{str(names)[:60]}, expected a non-empty list of class names. "
                        f"{_REFETCH}")
    return [n.decode(errors="replace") if isinstance(n, bytes) else n for n in names]


def read_batches(
    paths: list[Path], label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR batches -> (x uint8 [N, 3, 32, 32], y int64 [N]), concatenated in order."""
    xs, ys = [], []
    for path in paths:
        batch = load_pickle(path)
        data, labels = _get(batch, "data", path), _get(batch, label_key, path)
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                and data.shape[1] == 3 * 32 * 32):
            what = f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray) else (
                type(data).__name__)
            raise DataError(f"CIFAR file {path}: 'data' is a {what}, expected uint8 [N, 3072]. "
                            f"{_REFETCH}")
        y = np.asarray(labels)
        if y.shape != (len(data),) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"CIFAR file {path}: {label_key!r} holds {y.shape} {y.dtype} values, "
                            f"expected {len(data)} integers. {_REFETCH}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise DataError(f"CIFAR file {path}: {label_key!r} has label {bad}, expected "
                            f"0..{num_classes - 1}. {_REFETCH}")
        xs.append(data.reshape(-1, 3, 32, 32))  # [N, 3072] -> [N, C=3, H=32, W=32]
        ys.append(y.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def find_cifar_dir(root: Path, folder: str, files: list[str]) -> Path | None:
    """`root/folder` or `root` itself, whichever holds all `files`; None if neither does."""
    for candidate in (root / folder, root):
        if all((candidate / f).is_file() for f in files):
            return candidate
    return None


def _missing_error(name: str, root: Path, folder: str, files: list[str],
                   root_was_set: bool) -> DataError:
    remote = REMOTES[name]
    lines = []
    for candidate in (root / folder, root):
        if not candidate.is_dir():
            lines.append(f"  {candidate} (folder does not exist)")
        else:
            missing = [f for f in files if not (candidate / f).is_file()]
            lines.append(f"  {candidate} (missing: {', '.join(missing)})")
    url = remote.mirrors[0] + remote.files[0][0]
    where = "" if root_was_set else " (data.root is unset, so the download folder was used)"
    return DataError(
        f"{remote.title} files not found{where}. Looked in:\n" + "\n".join(lines)
        + f"\nTo get them: set data.download=true to fetch and check {url}; or download that "
        f"archive yourself and run `tar xzf {remote.files[0][0]} -C {root}` (or set "
        f"data.root=/folder/holding/{folder})."
    )


def _locate(cfg: DataConfig, name: str, folder: str, files: list[str]) -> Path:
    """The folder holding `files`, downloading first when data.download is set."""
    root = Path(cfg.root).expanduser() if cfg.root else default_root(name)
    found = find_cifar_dir(root, folder, files)
    if found is None and cfg.download:
        ensure_downloaded(name, root)
        found = find_cifar_dir(root, folder, files)
    if found is None:
        raise _missing_error(name, root, folder, files, cfg.root is not None)
    return found


_C10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


@register_source(
    "cifar10", _CIFAR_AUGMENT,
    "CIFAR-10 python pickles, 50,000 + 10,000 images 3x32x32, 10 classes",
)
def load_cifar10(cfg: DataConfig) -> DataSplits:
    """CIFAR-10: 50,000 train (5 batches) + 10,000 test images, uint8 3x32x32, 10 classes."""
    folder = _locate(cfg, "cifar10", "cifar-10-batches-py",
                     [*_C10_TRAIN, "test_batch", "batches.meta"])
    meta = folder / "batches.meta"
    names = _names(load_pickle(meta), "label_names", meta)
    x_tr, y_tr = read_batches([folder / f for f in _C10_TRAIN], "labels", len(names))
    x_te, y_te = read_batches([folder / "test_batch"], "labels", len(names))
    return make_splits("cifar10", x_tr, y_tr, x_te, y_te, cfg, names)


@register_source(
    "cifar100", _CIFAR_AUGMENT,
    "CIFAR-100 python pickles, 50,000 + 10,000 images 3x32x32, 100 classes "
    "(20 with data.coarse_labels=true)",
)
def load_cifar100(cfg: DataConfig) -> DataSplits:
    """CIFAR-100: 50,000 train + 10,000 test images, uint8 3x32x32; 100 fine classes, or the
    20 superclasses with `data.coarse_labels=true`."""
    folder = _locate(cfg, "cifar100", "cifar-100-python", ["train", "test", "meta"])
    kind = "coarse" if cfg.coarse_labels else "fine"
    meta = folder / "meta"
    names = _names(load_pickle(meta), f"{kind}_label_names", meta)
    x_tr, y_tr = read_batches([folder / "train"], f"{kind}_labels", len(names))
    x_te, y_te = read_batches([folder / "test"], f"{kind}_labels", len(names))
    return make_splits("cifar100", x_tr, y_tr, x_te, y_te, cfg, names)

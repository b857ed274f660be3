"""File formats on real files the tests write: MNIST IDX, CIFAR pickles, .npz, and downloads.

Nothing here reaches the network: downloads come from file:// URLs or an unreachable local port.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from trainlab.config.schema import DataConfig
from trainlab.data import download, load_data
from trainlab.errors import DataError

RNG = np.random.default_rng(0)


def _rows(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Each sample as one row (pixels, then label), rows sorted: compares sets of samples."""
    flat = np.concatenate([x.reshape(len(x), -1).numpy().astype(np.int64), y.numpy()[:, None]], 1)
    return flat[np.lexsort(flat.T[::-1])]


def _assert_same_set(d, x: np.ndarray, y: np.ndarray) -> None:
    """train+val of `d` hold exactly the samples (x uint8 [N, C, H, W], y [N])."""
    got = _rows(torch.cat([d.x_train, d.x_val]), torch.cat([d.y_train, d.y_val]))
    np.testing.assert_array_equal(got, _rows(torch.from_numpy(x), torch.from_numpy(y)))


def _cfg(name: str, root: Path | None, **kw) -> DataConfig:
    return DataConfig(name=name, root=None if root is None else str(root), **kw)


# ------------------------------------------------------------------------------------- IDX

_IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_idx(path: Path, arr: np.ndarray, compress: bool) -> Path:
    """Write a uint8 array as an IDX file (magic 0x00 0x00 0x08 ndim, big-endian sizes)."""
    payload = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    payload += arr.tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_mnist(folder: Path, compress: bool, n_train: int = 50, n_test: int = 20) -> dict:
    """An MNIST-layout folder with random 28x28 images; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = dict(zip(_IDX_NAMES, (
        RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        np.arange(n_train, dtype=np.uint8) % 10,
        RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        RNG.integers(0, 10, n_test, dtype=np.uint8),
    ), strict=True))
    for name, arr in arrays.items():
        write_idx(folder / (name + ".gz" if compress else name), arr, compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_mnist_idx_bit_exact(tmp_path, compress):
    a = write_mnist(tmp_path, compress)
    d = load_data(_cfg("mnist", tmp_path, val_fraction=0.0))
    assert d.x_train.dtype == torch.uint8 and d.x_train.shape == (50, 1, 28, 28)
    assert torch.equal(d.x_train[:, 0], torch.from_numpy(a["train-images-idx3-ubyte"]))
    assert torch.equal(d.y_train, torch.from_numpy(a["train-labels-idx1-ubyte"]).long())
    assert torch.equal(d.x_test[:, 0], torch.from_numpy(a["t10k-images-idx3-ubyte"]))
    assert torch.equal(d.y_test, torch.from_numpy(a["t10k-labels-idx1-ubyte"]).long())
    assert d.class_names == [str(i) for i in range(10)] and len(d.y_val) == 0


def test_mnist_torchvision_layout_with_val_split(tmp_path):
    a = write_mnist(tmp_path / "MNIST" / "raw", compress=False)
    d = load_data(_cfg("mnist", tmp_path, val_fraction=0.2))
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (40, 10, 20)
    assert np.array_equal(np.bincount(d.y_val.numpy()), np.ones(10))  # stratified: 1 per class
    _assert_same_set(d, a["train-images-idx3-ubyte"][:, None],
                     a["train-labels-idx1-ubyte"].astype(np.int64))


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_mnist_truncated_idx_names_the_file(tmp_path, compress):
    write_mnist(tmp_path, compress=False)
    plain = tmp_path / "t10k-images-idx3-ubyte"
    full = plain.read_bytes()
    plain.unlink()
    if compress:  # a gzip stream cut short, as an interrupted download leaves it
        path = plain.with_name(plain.name + ".gz")
        path.write_bytes(gzip.compress(full)[:-30])
    else:
        path = plain
        path.write_bytes(full[:-100])
    with pytest.raises(DataError, match="truncated") as err:
        load_data(_cfg("mnist", tmp_path))
    assert str(path) in str(err.value)


def test_mnist_without_root_looks_in_download_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        load_data(_cfg("mnist", None))
    msg = str(err.value)
    assert str(tmp_path / "cache" / "trainlab" / "data" / "mnist") in msg
    assert "data.download=true" in msg and "train-images-idx3-ubyte" in msg
    write_mnist(tmp_path / "cache" / "trainlab" / "data" / "mnist", compress=True)
    assert len(load_data(_cfg("mnist", None, val_fraction=0.0)).y_train) == 50


# ----------------------------------------------------------------------------------- CIFAR


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2 cPickle wrote for the official CIFAR files (protocol 2): strings as
    BINSTRING opcodes and numpy arrays via `numpy.core.multiarray._reconstruct`."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        head = (pickle.SHORT_BINSTRING + bytes([len(raw)]) if len(raw) < 256
                else pickle.BINSTRING + struct.pack("<i", len(raw)))
        self.write(head + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None) -> None:
        module = "numpy.core.multiarray" if obj.__name__ == "_reconstruct" else obj.__module__
        self.write(pickle.GLOBAL + f"{module}\n{obj.__name__}\n".encode())
        self.memoize(obj)


def dump(path: Path, obj: dict, style: str = "py2") -> None:
    """Pickle `obj` like the official files ("py2") or like today's Python ("py3")."""
    if style == "py2":
        buf = io.BytesIO()
        Py2Pickler(buf, protocol=2).dump(obj)
        path.write_bytes(buf.getvalue())
    else:
        path.write_bytes(pickle.dumps(obj, protocol=4))


def _images(n: int) -> np.ndarray:
    return RNG.integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar10(folder: Path, style: str = "py2", per_batch: int = 12, n_test: int = 15):
    """cifar-10-batches-py in the official dict layout -> (x_train, y_train, x_test, y_test)."""
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for i in range(1, 7):
        n = per_batch if i < 6 else n_test
        x, y = _images(n), [int(v) for v in RNG.integers(0, 10, n)]
        name = f"data_batch_{i}" if i < 6 else "test_batch"
        dump(folder / name, {b"batch_label": f"batch {i} of 5".encode(), b"labels": y,
                             b"data": x, b"filenames": [b"img_%d.png" % j for j in range(n)]},
             style)
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(np.array(y, np.int64))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    dump(folder / "batches.meta", {b"num_cases_per_batch": per_batch, b"label_names": names,
                                   b"num_vis": 3072}, style)
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


@pytest.mark.parametrize("style", ["py2", "py3"])
def test_cifar10_bit_exact(tmp_path, style):
    x_tr, y_tr, x_te, y_te = write_cifar10(tmp_path / "cifar-10-batches-py", style)
    d = load_data(_cfg("cifar10", tmp_path, val_fraction=0.0))
    assert d.x_train.shape == (60, 3, 32, 32) and d.x_train.dtype == torch.uint8
    assert torch.equal(d.x_train, torch.from_numpy(x_tr))
    assert torch.equal(d.y_train, torch.from_numpy(y_tr))
    assert torch.equal(d.x_test, torch.from_numpy(x_te))
    assert torch.equal(d.y_test, torch.from_numpy(y_te))
    assert d.class_names[:3] == ["airplane", "automobile", "bird"] and d.num_classes == 10


def test_cifar10_rgb_planes_and_root_at_folder(tmp_path):
    """Row layout: 1024 R values, then G, then B, each 32x32 row-major; root may be the folder."""
    folder = tmp_path / "cifar-10-batches-py"
    x_tr, y_tr, _, _ = write_cifar10(folder)
    d = load_data(_cfg("cifar10", folder, val_fraction=0.25))
    _assert_same_set(d, x_tr, y_tr)
    pix = torch.cat([d.x_train, d.x_val])
    i = int(np.flatnonzero((x_tr == pix[0].numpy()).all(axis=(1, 2, 3)))[0])
    raw = x_tr.reshape(-1, 3072)[i]
    assert pix[0, 1, 2, 5] == raw[1024 + 2 * 32 + 5] and pix[0, 2, 31, 0] == raw[2048 + 31 * 32]


def write_cifar100(folder: Path, n_train: int = 40, n_test: int = 10):
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        fine = RNG.integers(0, 100, n)
        x = _images(n)
        dump(folder / split, {b"filenames": [b"f.png"] * n, b"batch_label": b"x",
                              b"fine_labels": [int(v) for v in fine],
                              b"coarse_labels": [int(v) // 5 for v in fine], b"data": x})
        out[split] = (x.reshape(-1, 3, 32, 32), fine.astype(np.int64))
    dump(folder / "meta", {b"fine_label_names": [b"fine%d" % i for i in range(100)],
                           b"coarse_label_names": [b"coarse%d" % i for i in range(20)]})
    return out


@pytest.mark.parametrize("coarse", [False, True])
def test_cifar100_fine_and_coarse(tmp_path, coarse):
    out = write_cifar100(tmp_path / "cifar-100-python")
    d = load_data(_cfg("cifar100", tmp_path, val_fraction=0.0, coarse_labels=coarse))
    div = 5 if coarse else 1
    assert torch.equal(d.x_train, torch.from_numpy(out["train"][0]))
    assert torch.equal(d.y_train, torch.from_numpy(out["train"][1] // div))
    assert torch.equal(d.y_test, torch.from_numpy(out["test"][1] // div))
    assert d.num_classes == (20 if coarse else 100)
    assert d.class_names[7] == ("coarse7" if coarse else "fine7")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_cifar_damaged_pickle_names_the_file(tmp_path, damage):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    bad = folder / "data_batch_3"
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"\x80\x02}q\x00(\xff\x13")
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load_data(_cfg("cifar10", tmp_path))
    assert str(bad) in str(err.value) and "data.download=true" in str(err.value)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_pickle_with_forbidden_global_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    marker = tmp_path / "pwned"
    evil = folder / "batches.meta"
    evil.write_bytes(pickle.dumps({b"label_names": _Evil(marker)}, protocol=4))
    with pytest.raises(DataError, match="system") as err:
        load_data(_cfg("cifar10", tmp_path))
    assert str(evil) in str(err.value) and not marker.exists()


def test_cifar_missing_files_say_where_and_how(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError) as err:
        load_data(_cfg("cifar10", tmp_path))
    msg = str(err.value)
    assert str(folder) in msg and "missing: test_batch" in msg
    assert "data.download=true" in msg and "cifar-10-python.tar.gz" in msg


# ------------------------------------------------------------------------------------- npz


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHW"])
def test_npz_layouts_bit_exact(tmp_path, layout):
    shape = {"NHWC": (30, 8, 6, 3), "NCHW": (30, 3, 8, 6), "NHW": (30, 8, 6)}[layout]
    x_tr, x_te = (RNG.integers(0, 256, (n, *shape[1:]), dtype=np.uint8) for n in (30, 9))
    y_tr, y_te = np.arange(30) % 3, np.array([0, 1, 2] * 3, np.int32)
    path = _npz(tmp_path / "d.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
                class_names=np.array(["cat", "dog", "emu"]))
    d = load_data(_cfg("npz", path, val_fraction=0.0))
    to_nchw = {"NHWC": lambda x: x.transpose(0, 3, 1, 2), "NCHW": lambda x: x,
               "NHW": lambda x: x[:, None]}[layout]
    assert d.x_train.shape[1:] == ((1, 8, 6) if layout == "NHW" else (3, 8, 6))
    assert torch.equal(d.x_train, torch.from_numpy(np.ascontiguousarray(to_nchw(x_tr))))
    assert torch.equal(d.x_test, torch.from_numpy(np.ascontiguousarray(to_nchw(x_te))))
    assert torch.equal(d.y_train, torch.from_numpy(y_tr.astype(np.int64)))
    assert torch.equal(d.y_test, torch.from_numpy(y_te.astype(np.int64)))
    assert d.class_names == ["cat", "dog", "emu"]


def test_npz_val_split_and_default_class_names(tmp_path):
    x = RNG.integers(0, 256, (40, 1, 4, 4), dtype=np.uint8)
    y = np.repeat(np.arange(4), 10)
    path = _npz(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    d = load_data(_cfg("npz", path, val_fraction=0.25))
    assert len(d.y_val) == 10 and d.class_names == ["0", "1", "2", "3"]
    _assert_same_set(d, x, y.astype(np.int64))


def test_npz_ambiguous_layout_is_nchw_and_undecidable_is_error(tmp_path):
    x = RNG.integers(0, 256, (4, 3, 5, 3), dtype=np.uint8)  # axis 1 and axis 3 could be C
    two = np.array([0, 1, 0, 1])  # two classes: one class is refused
    path = _npz(tmp_path / "a.npz", x_train=x, y_train=two, x_test=x, y_test=two)
    assert torch.equal(load_data(_cfg("npz", path, val_fraction=0.0)).x_train,
                       torch.from_numpy(x))
    x5 = np.zeros((4, 5, 5, 5), np.uint8)
    path = _npz(tmp_path / "b.npz", x_train=x5, y_train=np.zeros(4, int), x_test=x5,
                y_test=np.zeros(4, int))
    with pytest.raises(DataError, match="cannot tell its layout") as err:
        load_data(_cfg("npz", path))
    assert str(path) in str(err.value) and "x_train" in str(err.value)


def _small(**override) -> dict:
    arrays = dict(x_train=np.zeros((6, 4, 4), np.uint8), y_train=np.array([0, 1, 2, 0, 1, 2]),
                  x_test=np.zeros((3, 4, 4), np.uint8), y_test=np.array([0, 1, 2]))
    arrays.update(override)
    return {k: v for k, v in arrays.items() if v is not None}


@pytest.mark.parametrize("override, needles", [
    (dict(y_test=np.array([0, 1, 3]), class_names=np.array(["a", "b", "c"])),
     ["'y_test'", "label 3", "3 classes"]),
    (dict(y_train=np.array([0, 1, -1, 0, 1, 2])), ["'y_train'", "-1"]),
    (dict(y_test=None, x_test=None), ["lacks the arrays x_test, y_test", "It has: x_train, "
                                      "y_train", "required: x_train, y_train, x_test, y_test"]),
    (dict(x_train=np.zeros((6, 4, 4), np.float32)), ["'x_train'", "float32", "astype(np.uint8)"]),
    (dict(y_train=np.zeros(6, np.float32)), ["'y_train'", "float32", "astype(np.int64)"]),
    (dict(x_test=np.zeros((3, 5, 4), np.uint8)), ["x_test", "must match"]),
], ids=["label-too-big", "negative-label", "missing-arrays", "float-images", "float-labels",
        "shape-mismatch"])
def test_npz_bad_input_names_file_and_array(tmp_path, override, needles):
    path = _npz(tmp_path / "bad.npz", **_small(**override))
    with pytest.raises(DataError) as err:
        load_data(_cfg("npz", path))
    msg = str(err.value)
    assert str(path) in msg
    for needle in needles:
        assert needle in msg


def test_npz_needs_root_and_a_real_file(tmp_path):
    with pytest.raises(DataError, match="data.root=/path/to/file.npz"):
        load_data(_cfg("npz", None))
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError) as err:
        load_data(_cfg("npz", broken))
    assert str(broken) in str(err.value)
    pickled = _npz(tmp_path / "obj.npz", **_small(class_names=np.array(["a", 1], dtype=object)))
    with pytest.raises(DataError, match="object arrays need pickle") as err:
        load_data(_cfg("npz", pickled))
    assert str(pickled) in str(err.value)


# -------------------------------------------------------------------------------- download


def _serve(monkeypatch, name: str, folder: Path, files: dict[str, bytes | None]) -> None:
    """Point data set `name` at a file:// mirror holding `files` (None content: keep the published
    checksum but serve a file that does not match it)."""
    folder.mkdir(parents=True, exist_ok=True)
    sums = dict(download.REMOTES[name].files)
    listed = []
    for fname, content in files.items():
        (folder / fname).write_bytes(content or b"not the official bytes")
        listed.append((fname, sums.get(fname) if content is None else
                       hashlib.md5(content).hexdigest()))
    remote = dataclasses.replace(download.REMOTES[name], mirrors=(folder.as_uri() + "/",),
                                 files=tuple(listed))
    monkeypatch.setitem(download.REMOTES, name, remote)


def test_download_offline_says_what_to_put_where(tmp_path, monkeypatch):
    remote = dataclasses.replace(download.REMOTES["mnist"], mirrors=("http://127.0.0.1:9/",))
    monkeypatch.setitem(download.REMOTES, "mnist", remote)
    monkeypatch.setattr(download, "TIMEOUT_S", 5.0)
    root = tmp_path / "mnist"
    with pytest.raises(DataError) as err:
        load_data(_cfg("mnist", root, download=True))
    msg = str(err.value)
    assert "Downloading MNIST failed" in msg
    assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz" in msg
    assert f"in {root}" in msg
    for name in _IDX_NAMES:  # the by-hand instructions name every file
        assert f"{name}.gz" in msg
    assert list(root.iterdir()) == []  # no partial files left behind


def test_download_checksum_mismatch_removes_file(tmp_path, monkeypatch):
    _serve(monkeypatch, "mnist", tmp_path / "server", {
        f"{n}.gz": None for n in _IDX_NAMES})  # served bytes do not match the published MD5s
    root = tmp_path / "data"
    with pytest.raises(DataError, match="checksum mismatch") as err:
        load_data(_cfg("mnist", root, download=True))
    assert "train-images-idx3-ubyte.gz" in str(err.value) and str(root) in str(err.value)
    assert list(root.iterdir()) == []


def test_download_mnist_from_mirror(tmp_path, monkeypatch):
    made = write_mnist(tmp_path / "made", compress=True)
    _serve(monkeypatch, "mnist", tmp_path / "server", {
        f"{n}.gz": (tmp_path / "made" / f"{n}.gz").read_bytes() for n in _IDX_NAMES})
    d = load_data(_cfg("mnist", tmp_path / "data", download=True, val_fraction=0.0))
    assert torch.equal(d.x_test[:, 0], torch.from_numpy(made["t10k-images-idx3-ubyte"]))
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(
        f"{n}.gz" for n in _IDX_NAMES)


def _tar_gz(members: dict[str, bytes | None], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def test_download_cifar10_verifies_and_extracts_once(tmp_path, monkeypatch):
    src = tmp_path / "made" / "cifar-10-batches-py"
    x_tr, y_tr, x_te, y_te = write_cifar10(src)
    archive = _tar_gz({"cifar-10-batches-py": None, **{
        f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in src.iterdir()}})
    _serve(monkeypatch, "cifar10", tmp_path / "server", {"cifar-10-python.tar.gz": archive})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    d = load_data(_cfg("cifar10", None, download=True, val_fraction=0.0))
    assert torch.equal(d.x_train, torch.from_numpy(x_tr)) and torch.equal(d.y_test,
                                                                          torch.from_numpy(y_te))
    root = tmp_path / "cache" / "trainlab" / "data" / "cifar10"
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]  # archive removed

    def no_network(*args):
        raise AssertionError("files are present: nothing must be fetched")

    monkeypatch.setattr(download, "fetch", no_network)
    again = load_data(_cfg("cifar10", None, download=True, val_fraction=0.0))
    assert torch.equal(again.x_test, torch.from_numpy(x_te))


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/trainlab-evil.txt", "link"])
def test_tar_with_unsafe_member_is_refused(tmp_path, monkeypatch, member):
    if member == "link":
        archive = _tar_gz({"cifar-10-batches-py/ok": b"1"}, links={"cifar-10-batches-py/x":
                                                                   "/etc/passwd"})
    else:
        archive = _tar_gz({"cifar-10-batches-py/ok": b"1", member: b"pwned"})
    _serve(monkeypatch, "cifar10", tmp_path / "server", {"cifar-10-python.tar.gz": archive})
    root = tmp_path / "data" / "inner"
    with pytest.raises(DataError, match="unsafe") as err:
        load_data(_cfg("cifar10", root, download=True))
    assert str(root / "cifar-10-python.tar.gz") in str(err.value)
    assert not (tmp_path / "data" / "evil.txt").exists()
    assert not Path("/tmp/trainlab-evil.txt").exists()
    assert not (root / "cifar-10-batches-py").exists()  # nothing extracted at all


def test_placed_archive_with_wrong_checksum_is_error(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar-100-python.tar.gz").write_bytes(b"truncated download")
    with pytest.raises(DataError, match="checksum") as err:
        load_data(_cfg("cifar100", root, download=True))
    assert str(root / "cifar-100-python.tar.gz") in str(err.value)

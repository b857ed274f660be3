"""Data sources, splits, the IDX reader and channel statistics, on real small data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from trainlab.config.schema import DataConfig
from trainlab.data import channel_stats, load_data, read_idx, stratified_split
from trainlab.data.sources.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT
from trainlab.errors import ConfigError, DataError

FM_ROOT = Path(FASHION_MNIST_ROOT)
needs_fashion = pytest.mark.skipif(
    not (FM_ROOT / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed in {FM_ROOT} (apt-get install dataset-fashion-mnist)",
)
_IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}


def write_idx(path: Path, arr: np.ndarray, compress: bool) -> Path:
    """Write `arr` as an IDX file (big-endian), gzip-compressed if `compress`."""
    code = _IDX_CODES[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def _rows(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Each sample as one sorted-comparable row: [N, C*H*W + 1] (pixels, then label)."""
    flat = np.concatenate([x.reshape(len(x), -1).numpy().astype(np.int64), y.numpy()[:, None]], 1)
    return flat[np.lexsort(flat.T[::-1])]


# --------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return load_data(DataConfig(name="digits"))


def test_digits_shapes_dtype_range(digits):
    assert digits.x_train.dtype == torch.uint8 and digits.y_train.dtype == torch.int64
    assert (digits.channels, digits.height, digits.width, digits.num_classes) == (1, 8, 8, 10)
    assert digits.class_names == [str(i) for i in range(10)]
    all_x = torch.cat([digits.x_train, digits.x_val, digits.x_test])
    assert int(all_x.max()) == 255 and int(all_x.min()) == 0
    n_test = len(digits.y_test)
    assert n_test == round(0.2 * 1797)
    assert len(digits.y_val) == round(0.1 * (1797 - n_test))
    assert len(digits.y_train) + len(digits.y_val) + n_test == 1797


def test_digits_splits_partition_the_rescaled_data(digits):
    """Train+val+test is exactly the sklearn set, each sample once, scaled round(v*255/16)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ref_x = torch.from_numpy(np.rint(bunch.images * 255 / 16).astype(np.uint8))[:, None]
    got_x = torch.cat([digits.x_train, digits.x_val, digits.x_test])
    got_y = torch.cat([digits.y_train, digits.y_val, digits.y_test])
    np.testing.assert_array_equal(_rows(got_x, got_y), _rows(ref_x, torch.from_numpy(bunch.target)))


def test_digits_stratified(digits):
    counts = np.bincount(np.concatenate([s.numpy() for s in (
        digits.y_train, digits.y_val, digits.y_test)]), minlength=10)
    test_counts = np.bincount(digits.y_test.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * counts) <= 1)
    rest = counts - test_counts
    val_counts = np.bincount(digits.y_val.numpy(), minlength=10)
    assert np.all(np.abs(val_counts - 0.1 * rest) <= 1)


def test_split_is_fixed_by_split_seed(digits):
    again = load_data(DataConfig(name="digits"))
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(digits, key), getattr(again, key)), key
    other = load_data(DataConfig(name="digits", split_seed=1))
    assert not torch.equal(digits.y_test, other.y_test)


def test_stratified_split_partitions_indices():
    labels = np.repeat(np.arange(7), [5, 9, 13, 1, 30, 2, 17])
    keep, hold = stratified_split(labels, 0.3, seed=3)
    assert len(hold) == round(0.3 * len(labels))
    assert np.intersect1d(keep, hold).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([keep, hold])), np.arange(len(labels)))
    per_class = np.bincount(labels[hold], minlength=7)
    assert np.all(np.abs(per_class - 0.3 * np.bincount(labels)) < 1 + 1e-9)
    keep2, hold2 = stratified_split(labels, 0.3, seed=3)
    assert np.array_equal(hold, hold2) and np.array_equal(keep, keep2)


def test_val_fraction_zero_gives_empty_val():
    d = load_data(DataConfig(name="digits", val_fraction=0.0))
    assert d.x_val.shape == (0, 1, 8, 8) and d.x_val.dtype == torch.uint8
    assert d.y_val.shape == (0,) and d.y_val.dtype == torch.int64
    assert len(d.y_train) + len(d.y_test) == 1797


@pytest.mark.parametrize("key", ["val_fraction", "test_fraction"])
def test_bad_fraction_is_config_error(key):
    with pytest.raises(ConfigError, match=f"data.{key}"):
        load_data(DataConfig(name="digits", **{key: 1.0}))


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        load_data(DataConfig(name="cifar99"))
    msg = str(err.value)
    assert "data.name" in msg and "digits" in msg and "fashion-mnist" in msg


# -------------------------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    "arr",
    [
        np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8),
        np.random.default_rng(1).integers(0, 10, (11,), dtype=np.uint8),
        np.random.default_rng(2).integers(-(2**31), 2**31 - 1, (4, 2), dtype=np.int32),
        np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32),
    ],
    ids=["u8-3d", "u8-1d", "i32", "f32"],
)
def test_read_idx_round_trip(tmp_path, arr, compress):
    path = write_idx(tmp_path / ("a.idx.gz" if compress else "a.idx"), arr, compress)
    got = read_idx(path)
    assert got.dtype == arr.dtype and got.shape == arr.shape
    assert got.tobytes() == arr.tobytes()
    got[...] = 0  # writable (torch.from_numpy would warn on a read-only buffer)


@pytest.mark.parametrize("compress", [True, False])
def test_truncated_idx_is_data_error(tmp_path, compress):
    arr = np.arange(200, dtype=np.uint8).reshape(2, 10, 10)
    payload = write_idx(tmp_path / "full", arr, compress=False).read_bytes()[:-7]
    path = tmp_path / ("cut.gz" if compress else "cut")
    if compress:  # a gzip stream cut short, as an interrupted download leaves it
        path.write_bytes(gzip.compress(payload + bytes(7))[:-20])
    else:
        path.write_bytes(payload)
    with pytest.raises(DataError, match="truncated") as err:
        read_idx(path)
    assert str(path) in str(err.value) and "download" in str(err.value)


def test_wrong_magic_is_data_error(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(b"\x12\x34\x08\x01" + bytes(8)))
    with pytest.raises(DataError, match="magic") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_missing_folder_says_where_and_how(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_data(DataConfig(name="fashion-mnist", root=str(root)))
    msg = str(err.value)
    assert str(root) in msg and str(root / "FashionMNIST" / "raw") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "data.root=" in msg


def test_torchvision_layout_with_plain_files(tmp_path):
    """root/FashionMNIST/raw/ with gunzipped files, as torchvision leaves them."""
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x_tr = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    y_tr = np.repeat(np.arange(10, dtype=np.uint8), 4)
    x_te = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    y_te = np.arange(10, dtype=np.uint8)
    for name, arr in [("train-images-idx3-ubyte", x_tr), ("train-labels-idx1-ubyte", y_tr),
                      ("t10k-images-idx3-ubyte", x_te), ("t10k-labels-idx1-ubyte", y_te)]:
        write_idx(raw / name, arr, compress=False)
    d = load_data(DataConfig(name="fashion-mnist", root=str(tmp_path), val_fraction=0.25))
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (30, 10, 10)
    assert np.array_equal(np.bincount(d.y_val.numpy()), np.ones(10))  # one per class
    assert torch.equal(d.x_test[:, 0], torch.from_numpy(x_te))
    np.testing.assert_array_equal(
        _rows(torch.cat([d.x_train, d.x_val]), torch.cat([d.y_train, d.y_val])),
        _rows(torch.from_numpy(x_tr)[:, None], torch.from_numpy(y_tr.astype(np.int64))),
    )


def test_mismatched_label_count_is_data_error(tmp_path):
    arrays = {"train-images-idx3-ubyte": np.zeros((4, 28, 28), np.uint8),
              "train-labels-idx1-ubyte": np.zeros(3, np.uint8),
              "t10k-images-idx3-ubyte": np.zeros((2, 28, 28), np.uint8),
              "t10k-labels-idx1-ubyte": np.zeros(2, np.uint8)}
    for name, arr in arrays.items():
        write_idx(tmp_path / f"{name}.gz", arr, compress=True)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_data(DataConfig(name="fashion-mnist", root=str(tmp_path)))


# ---------------------------------------------------------------------- real Fashion-MNIST


@needs_fashion
def test_fashion_mnist_real_files():
    raw_y_train = read_idx(FM_ROOT / "train-labels-idx1-ubyte.gz").astype(np.int64)
    raw_x_test = read_idx(FM_ROOT / "t10k-images-idx3-ubyte.gz")
    raw_y_test = read_idx(FM_ROOT / "t10k-labels-idx1-ubyte.gz").astype(np.int64)

    full = load_data(DataConfig(name="fashion-mnist", val_fraction=0.0))
    assert full.x_train.shape == (60000, 1, 28, 28) and full.x_test.shape == (10000, 1, 28, 28)
    assert full.x_train.dtype == torch.uint8 and full.class_names == FASHION_MNIST_CLASSES
    assert np.array_equal(full.y_train.numpy(), raw_y_train)
    assert np.array_equal(full.y_test.numpy(), raw_y_test)
    assert np.array_equal(full.x_test[:, 0].numpy(), raw_x_test)
    assert len(full.y_val) == 0

    split = load_data(DataConfig(name="fashion-mnist", val_fraction=0.1))
    assert (len(split.y_train), len(split.y_val), len(split.y_test)) == (54000, 6000, 10000)
    assert np.array_equal(np.bincount(split.y_val.numpy()), np.full(10, 600))  # 6000 per class
    assert np.array_equal(split.y_test.numpy(), raw_y_test)


# -------------------------------------------------------------------------------------- stats


def test_channel_stats_matches_numpy():
    x = torch.randint(0, 256, (37, 3, 5, 6), dtype=torch.uint8, generator=torch.Generator()
                      .manual_seed(0))
    x[:, 2] = 77  # constant channel
    mean, std = channel_stats(x, chunk=8)  # several chunks, the last one partial
    ref = x.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std[:2], ref.std(axis=(0, 2, 3))[:2], rtol=1e-10)
    assert std[2] == 1.0 and mean[2] == pytest.approx(77 / 255)


def test_channel_stats_rejects_float():
    with pytest.raises(ValueError, match="uint8"):
        channel_stats(torch.zeros(2, 1, 3, 3))

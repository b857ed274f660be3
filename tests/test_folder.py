"""The `folder` source, its decode cache, file-backed splits and conversion at load, on real
image files written from known arrays."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, features

from trainlab.config.schema import DataConfig
from trainlab.data import channel_stats, convert, load_data
from trainlab.data.sources.folder import FolderFiles
from trainlab.errors import ConfigError, DataError


def write_images(root: Path, split: str, images: dict[str, list[np.ndarray]],
                 ext: str = "png", **save_kw) -> None:
    """images[class] = arrays [H, W] (grey) or [H, W, 3], saved as root/split/class/NNN.ext."""
    for cls, arrays in images.items():
        folder = root / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(arrays):
            Image.fromarray(a).save(folder / f"{i:03d}.{ext}", **save_kw)


def rand_images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> list[np.ndarray]:
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def as_chw(a: np.ndarray) -> np.ndarray:
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def stack(images: dict[str, list[np.ndarray]]) -> torch.Tensor:
    """Expected x: classes in sorted order, files in name order -> uint8 [N, C, H, W]."""
    return torch.from_numpy(np.stack([as_chw(a) for c in sorted(images) for a in images[c]]))


def cfg(root: Path, tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(name="folder", root=str(root), cache_dir=str(tmp_path / "cache"), **kw)


@pytest.fixture
def three_splits(tmp_path):
    """Grey 7x5 PNGs in train/ (2 classes), val/ and test/; returns (root, arrays per split)."""
    rng = np.random.default_rng(0)
    sets = {s: {"cat": rand_images(rng, n, (7, 5)), "dog": rand_images(rng, n + 1, (7, 5))}
            for s, n in (("train", 6), ("val", 2), ("test", 3))}
    for split, images in sets.items():
        write_images(tmp_path / "data", split, images)
    return tmp_path / "data", sets


# --------------------------------------------------------------------------- formats, layout


def test_png_grey_loads_bit_exact_with_explicit_splits(three_splits, tmp_path):
    root, sets = three_splits
    d = load_data(cfg(root, tmp_path))
    assert d.class_names == ["cat", "dog"] and (d.channels, d.height, d.width) == (1, 7, 5)
    for split in ("train", "val", "test"):
        x, y = getattr(d, f"x_{split}"), getattr(d, f"y_{split}")
        assert x.dtype == torch.uint8 and torch.equal(x, stack(sets[split]))
        n_cat = len(sets[split]["cat"])
        assert y.tolist() == [0] * n_cat + [1] * len(sets[split]["dog"])


def test_rgb_png_bit_exact_and_one_colour_image_makes_the_set_rgb(tmp_path):
    rng = np.random.default_rng(1)
    images = {"a": rand_images(rng, 4, (6, 6, 3)), "b": rand_images(rng, 3, (6, 6))}
    write_images(tmp_path / "d", "train", images)
    write_images(tmp_path / "d", "test", {"a": rand_images(rng, 1, (6, 6, 3))})
    d = load_data(cfg(tmp_path / "d", tmp_path, val_fraction=0.0))
    assert d.channels == 3
    expect = torch.cat([stack({"a": images["a"]}),
                        stack({"b": images["b"]}).expand(-1, 3, -1, -1)])  # grey replicated
    assert torch.equal(d.x_train, expect)


def test_jpeg_close_and_webp_bmp_uppercase_exact(tmp_path):
    rng = np.random.default_rng(2)
    smooth = [np.repeat(np.repeat(rng.integers(0, 256, (2, 2, 3), dtype=np.uint8), 8, 0), 8, 1)
              for _ in range(3)]  # 16x16, flat on JPEG's 8x8 blocks: little loss
    jpeg = dict(quality=95, subsampling=0)  # no chroma subsampling
    two = {"x": smooth, "y": smooth[:1]}  # two classes: one class is refused
    write_images(tmp_path / "j", "train", two, "jpg", **jpeg)
    write_images(tmp_path / "j", "test", {"x": smooth[:1], "y": smooth[:1]}, "JPEG", **jpeg)
    d = load_data(cfg(tmp_path / "j", tmp_path, val_fraction=0.0))
    assert d.x_train.shape == (4, 3, 16, 16)
    diff = (d.x_train.int() - stack(two).int()).abs().float()
    assert diff.mean() < 1 and diff.max() <= 4
    exact = rand_images(rng, 2, (5, 4, 3))
    formats = [("BMP", {})] + ([("WEBP", {"lossless": True})] if features.check("webp") else [])
    for ext, kw in formats:
        root = tmp_path / ext
        two = {"x": exact, "y": exact[:1]}
        write_images(root, "train", two, ext, **kw)
        write_images(root, "test", two, ext.lower(), **kw)
        d = load_data(cfg(root, tmp_path, val_fraction=0.0))
        assert torch.equal(d.x_train, stack(two)), ext


def test_sixteen_bit_grey_png_is_scaled_to_8_bit(tmp_path):
    wide = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000)
    for split in ("train", "test"):
        for cls in ("a", "b"):  # two classes: one class is refused
            (tmp_path / "w" / split / cls).mkdir(parents=True)
            Image.fromarray(wide).save(tmp_path / "w" / split / cls / "0.png")
    d = load_data(cfg(tmp_path / "w", tmp_path, val_fraction=0.0))
    expect = (wide.astype(np.int64) * 255 + 32767) // 65535
    assert d.channels == 1 and d.x_test[0, 0].numpy().tolist() == expect.tolist()


def test_train_only_layout_carves_stratified_deterministic_splits(tmp_path):
    counts = {"a": 20, "b": 30, "c": 50}
    images = {c: [np.zeros((3, 3), np.uint8) for _ in range(n)] for c, n in counts.items()}
    for k, arrs in enumerate(images.values()):
        for i, a in enumerate(arrs):
            a[0, 0], a[1, 1] = k, i  # pixel (0, 0): class, (1, 1): index -> all unique
    write_images(tmp_path / "t", "train", images)
    config = cfg(tmp_path / "t", tmp_path, val_fraction=0.1, test_fraction=0.2, split_seed=3)
    d = load_data(config)
    assert len(d.y_test) == 20 and len(d.y_val) == 8 and len(d.y_train) == 72
    assert torch.bincount(d.y_test).tolist() == [4, 6, 10]  # 20% of every class
    assert torch.bincount(d.y_val).tolist() == [2, 2, 4]  # 1.6, 2.4, 4.0 -> largest remainder
    keys = {s: {(int(x[0, 0, 0]), int(x[0, 1, 1])) for x in getattr(d, f"x_{s}")}
            for s in ("train", "val", "test")}
    assert sum(len(k) for k in keys.values()) == 100 and len(set().union(*keys.values())) == 100
    again = load_data(config)
    assert torch.equal(again.x_test, d.x_test) and torch.equal(again.y_val, d.y_val)
    other = load_data(dataclasses.replace(config, split_seed=4))
    assert not torch.equal(other.x_test, d.x_test)


def test_non_image_and_hidden_files_are_ignored_and_counted(three_splits, tmp_path, capsys):
    root, sets = three_splits
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / ".hidden.png").write_bytes(b"junk")
    (root / "train" / ".DS_Store").write_bytes(b"junk")
    (root / "val" / "labels.csv").write_text("a file beside the class folders")
    (root / "test" / "dog" / ".ipynb_checkpoints").mkdir()
    (root / "README.md").write_text("top-level files are not looked at")
    d = load_data(cfg(root, tmp_path))
    assert torch.equal(d.x_train, stack(sets["train"]))
    err = capsys.readouterr().err
    assert "ignored 5 non-image or hidden entries" in err and "e.g. train/.DS_Store" in err


# --------------------------------------------------------------------------- bad input


def test_missing_root_train_and_unset_root_are_named(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.*does not exist"):
        load_data(cfg(tmp_path / "nowhere", tmp_path))
    (tmp_path / "flat" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"has no train/ folder.*move them into"):
        load_data(cfg(tmp_path / "flat", tmp_path))
    with pytest.raises(ConfigError, match="data.root"):
        load_data(DataConfig(name="folder"))


def test_empty_class_folder_and_unknown_val_class_are_named(three_splits, tmp_path):
    root, _ = three_splits
    (root / "train" / "emu").mkdir()
    (root / "train" / "emu" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"train/emu holds no images.*Remove the empty folder"):
        load_data(cfg(root, tmp_path))
    (root / "train" / "emu" / "readme.txt").unlink()
    (root / "train" / "emu").rmdir()
    write_images(root, "val", {"yak": rand_images(np.random.default_rng(0), 1, (7, 5))})
    with pytest.raises(DataError, match=r"val/yak is not in .*train/.*add .*train/yak/"):
        load_data(cfg(root, tmp_path))


def test_truncated_png_is_named_or_skipped_and_counted(three_splits, tmp_path, capsys):
    root, sets = three_splits
    big = np.random.default_rng(5).integers(0, 256, (7, 5), dtype=np.uint8)
    bad = root / "train" / "dog" / "zzz.png"
    Image.fromarray(big).save(bad)
    bad.write_bytes(bad.read_bytes()[:-30])  # cut inside the image data
    with pytest.raises(DataError, match=r"zzz\.png.*data\.skip_bad_files=true"):
        load_data(cfg(root, tmp_path))
    d = load_data(cfg(root, tmp_path, skip_bad_files=True))
    assert torch.equal(d.x_train, stack(sets["train"]))
    assert "skipped 1 unreadable images" in capsys.readouterr().err
    again = load_data(cfg(root, tmp_path, skip_bad_files=True))  # from the cache: still counted
    assert torch.equal(again.x_train, d.x_train) and "skipped 1" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"zzz\.png"):  # the cache does not hide it either
        load_data(cfg(root, tmp_path))


def test_garbage_with_image_extension_is_named(three_splits, tmp_path):
    root, _ = three_splits
    (root / "test" / "cat" / "fake.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=r"fake\.jpg.*PIL can identify"):
        load_data(cfg(root, tmp_path))
    d = load_data(cfg(root, tmp_path, skip_bad_files=True))
    assert len(d.y_test) == 7


def test_unreadable_file_is_named_with_the_fix(three_splits, tmp_path, monkeypatch):
    root, _ = three_splits
    victim = root / "val" / "cat" / "001.png"
    real_open = Image.open

    def guarded_open(fp, *a, **kw):  # what a chmod 000 file does for a non-root user
        if Path(fp) == victim:
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *a, **kw)

    monkeypatch.setattr(Image, "open", guarded_open)
    with pytest.raises(DataError, match=r"val/cat/001\.png: permission denied.*chmod a\+r"):
        load_data(cfg(root, tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_for_real(three_splits, tmp_path):
    root, _ = three_splits
    victim = root / "train" / "dog" / "002.png"
    victim.chmod(0)
    try:
        with pytest.raises(DataError, match=r"002\.png: permission denied"):
            load_data(cfg(root, tmp_path))
    finally:
        victim.chmod(0o644)


def test_mixed_sizes_name_two_files_and_image_size_fixes_it(three_splits, tmp_path):
    root, _ = three_splits
    Image.fromarray(np.zeros((9, 4), np.uint8)).save(root / "train" / "dog" / "odd.png")
    with pytest.raises(DataError, match=r"cat/000\.png is 5x7 and .*dog/odd\.png is 4x9.*"
                                        r"data\.image_size="):
        load_data(cfg(root, tmp_path))
    d = load_data(cfg(root, tmp_path, image_size=6))
    assert (d.height, d.width) == (6, 6) and len(d.y_train) == 14


# --------------------------------------------------------------------------- cache


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    real = convert.decode_image

    def counting(path, channels, image_size):
        calls.append(Path(path).name)
        return real(path, channels, image_size)

    monkeypatch.setattr(convert, "decode_image", counting)
    return calls


def test_second_load_hits_the_cache(three_splits, tmp_path, count_decodes):
    root, _ = three_splits
    first = load_data(cfg(root, tmp_path))
    assert len(count_decodes) == 25  # train 6 + 7, val 2 + 3, test 3 + 4
    count_decodes.clear()
    second = load_data(cfg(root, tmp_path))
    assert count_decodes == []
    assert all(torch.equal(getattr(first, k), getattr(second, k)) for k in ("x_train", "x_test"))


def test_touched_or_added_file_invalidates_the_cache(three_splits, tmp_path, count_decodes):
    root, sets = three_splits
    load_data(cfg(root, tmp_path))
    target = root / "train" / "cat" / "000.png"
    new = np.full((7, 5), 77, np.uint8)
    st = target.stat()
    Image.fromarray(new).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    count_decodes.clear()
    d = load_data(cfg(root, tmp_path))
    assert len(count_decodes) == 25 and torch.equal(d.x_train[0, 0], torch.from_numpy(new))
    Image.fromarray(new).save(root / "test" / "dog" / "new.png")
    d = load_data(cfg(root, tmp_path))
    assert len(d.y_test) == 8
    entries = list((tmp_path / "cache" / "folder").iterdir())
    assert len(entries) == 1  # stale decoded copies of this folder are removed


def test_corrupt_cache_file_is_rebuilt(three_splits, tmp_path, capsys):
    root, sets = three_splits
    load_data(cfg(root, tmp_path))
    (npy,) = (tmp_path / "cache" / "folder").glob("*/x-*.npy")
    npy.write_bytes(npy.read_bytes()[:100])
    d = load_data(cfg(root, tmp_path))
    assert torch.equal(d.x_test, stack(sets["test"]))
    assert "rebuilding" in capsys.readouterr().err
    assert load_data(cfg(root, tmp_path)).x_val.shape == (5, 1, 7, 5)


def test_unwritable_cache_dir_loads_without_a_cache(three_splits, tmp_path, capsys):
    root, sets = three_splits
    (tmp_path / "a-file").write_text("a file where the cache folder should go")
    config = dataclasses.replace(cfg(root, tmp_path), cache_dir=str(tmp_path / "a-file" / "c"))
    d = load_data(config)
    assert torch.equal(d.x_val, stack(sets["val"]))
    assert "cannot create the decode cache folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- file-backed


def test_file_backed_reads_equal_the_in_memory_tensors(three_splits, tmp_path):
    root, _ = three_splits
    mem = load_data(cfg(root, tmp_path, in_memory=True))
    files = load_data(cfg(root, tmp_path, in_memory=False))
    for split in ("train", "val", "test"):
        x = getattr(files, f"x_{split}")
        assert isinstance(x, FolderFiles) and x.shape == (len(x), 1, 7, 5)
        x = pickle.loads(pickle.dumps(x))  # as a DataLoader worker gets it
        assert torch.equal(torch.stack([x.read(i) for i in range(len(x))]),
                           getattr(mem, f"x_{split}"))
        assert torch.equal(getattr(files, f"y_{split}"), getattr(mem, f"y_{split}"))
    assert channel_stats(files.x_train) == channel_stats(mem.x_train)


def test_auto_goes_file_backed_above_the_limit_and_allows_mixed_sizes(tmp_path, capsys):
    rng = np.random.default_rng(6)
    images = {"a": [rng.integers(0, 256, (4 + i, 6), dtype=np.uint8) for i in range(3)],
              "b": [rng.integers(0, 256, (5, 6), dtype=np.uint8)]}
    write_images(tmp_path / "m", "train", images)
    write_images(tmp_path / "m", "test", images)
    d = load_data(cfg(tmp_path / "m", tmp_path, in_memory_max_gb=1e-9, val_fraction=0.0))
    assert isinstance(d.x_train, FolderFiles) and d.x_train.shape == (4, 1, 0, 0)
    assert "file-backed" in capsys.readouterr().err
    assert [tuple(d.x_train.read(i).shape) for i in range(3)] == [(1, 4, 6), (1, 5, 6), (1, 6, 6)]
    pixels = np.concatenate([a.ravel() for c in "ab" for a in images[c]]).astype(np.float64) / 255
    mean, std = channel_stats(d.x_train)
    assert mean[0] == pytest.approx(pixels.mean()) and std[0] == pytest.approx(pixels.std())
    d.x_train.path(1).unlink()
    with pytest.raises(DataError, match=r"train/a/001\.png"):
        d.x_train.read(1)


# --------------------------------------------------------------------------- conversion


def test_digits_resized_and_made_rgb():
    base = load_data(DataConfig(name="digits"))
    d = load_data(DataConfig(name="digits", image_size=16, channels=3))
    assert d.x_train.shape == (len(base.y_train), 3, 16, 16) and d.x_train.dtype == torch.uint8
    assert torch.equal(d.x_train[:, 0], d.x_train[:, 1]) and torch.equal(d.x_train[:, 0],
                                                                          d.x_train[:, 2])
    ref = F.interpolate(base.x_test.float(), size=(16, 16), mode="bilinear", antialias=True,
                        align_corners=False).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(d.x_test[:, :1], ref)
    same = load_data(DataConfig(name="digits", image_size=8, channels=1))
    assert torch.equal(same.x_train, base.x_train)
    with pytest.raises(ConfigError, match=r"data.channels must be one of: 1, 3 \(got 2\)"):
        load_data(DataConfig(name="digits", channels=2))


def test_folder_conversion_happens_at_decode_and_matches_tensor_conversion(tmp_path):
    rng = np.random.default_rng(7)
    images = {"a": rand_images(rng, 3, (6, 10, 3)), "b": rand_images(rng, 2, (6, 10, 3))}
    write_images(tmp_path / "c", "train", images)
    write_images(tmp_path / "c", "test", images)
    d = load_data(cfg(tmp_path / "c", tmp_path, image_size=4, channels=1, val_fraction=0.0))
    native = stack(images)
    assert torch.equal(d.x_train, convert.convert_images(native, 4, 1))
    luma = torch.tensor(convert.LUMA).view(1, 3, 1, 1)
    grey = load_data(cfg(tmp_path / "c", tmp_path, channels=1, val_fraction=0.0)).x_train
    expect = (native.double() * luma.double()).sum(1, keepdim=True).round()
    assert (grey.double() - expect).abs().max() <= 1  # float32 vs float64 rounding at .5
    assert (grey.double() == expect).double().mean() > 0.99
    files = load_data(cfg(tmp_path / "c", tmp_path, image_size=4, channels=1, in_memory=False,
                          val_fraction=0.0)).x_train
    assert files.shape == (5, 1, 4, 4) and torch.equal(files.read(4), d.x_train[4])

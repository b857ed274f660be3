"""Data that cannot mean anything is refused, through the CLI, on small files written here.

Every refusal: exit code 2, one `trainlab: error:` naming the file, folder or key, and no
traceback. Labels with gaps and classes carved away from train only warn (`trainlab: warning:`).
Symbolic-link loops never hang: they are refused, or skipped and counted with
data.skip_bad_files=true.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainlab.cli import main
from trainlab.config.schema import DataConfig
from trainlab.data import load_data

RNG = np.random.default_rng(0)
TEN = [0, 1] * 5  # ten training labels of two classes


def inspect(capsys, tmp_path: Path, *overrides: str) -> tuple[int, str]:
    """`trainlab data inspect <overrides>` in process -> (exit code, stderr)."""
    rc = main(["data", "inspect", *overrides, "--out", str(tmp_path / "grid.png")])
    return rc, capsys.readouterr().err


def assert_refused(rc: int, err: str, needles: list[str]) -> None:
    assert rc == 2, err
    assert err.startswith("trainlab: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("trainlab: warning: ")]


# ------------------------------------------------------------------------------ image folders


def pngs(folder: Path, n: int, start: int = 0) -> None:
    """n random grey 4x4 PNGs folder/NNN.png."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        Image.fromarray(RNG.integers(0, 256, (4, 4), dtype=np.uint8)).save(folder / f"{i:03}.png")


def good_folder(root: Path) -> Path:
    """root/train/{cat,dog} with 4 images each, root/test/{cat,dog} with 2 each."""
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("cat", "dog"):
            pngs(root / split / cls, n)
    return root


def _one_class(root: Path) -> None:
    pngs(root / "train" / "cat", 5)


def _no_train(root: Path) -> None:
    pngs(root / "cat", 3)
    pngs(root / "dog", 3)


def _empty_class(root: Path) -> None:
    good_folder(root)
    (root / "train" / "emu").mkdir()


def _only_non_images(root: Path) -> None:
    good_folder(root)
    (root / "train" / "emu").mkdir()
    (root / "train" / "emu" / "notes.txt").write_text("no images")


def _dangling_train(root: Path) -> None:
    root.mkdir()
    os.symlink("elsewhere", root / "train")


def _train_links_to_root(root: Path) -> None:
    good_folder(root)
    (root / "real").mkdir()
    for cls in ("cat", "dog"):
        (root / "train" / cls).rename(root / "real" / cls)
    (root / "train").rmdir()
    os.symlink("real", root / "train")
    os.symlink("..", root / "real" / "cat" / "up")


def _empty_val(root: Path) -> None:
    good_folder(root)
    (root / "val").mkdir()


def _garbage_png(root: Path) -> None:
    good_folder(root)
    (root / "train" / "cat" / "fake.png").write_bytes(b"not a png at all")


# Bad entries: each builder adds one to a good folder and returns its path relative to root.
def _dir_link_to_parent(root: Path) -> str:
    os.symlink("..", root / "train" / "cat" / "loop")
    return "train/cat/loop"


def _dir_link_to_itself_level(root: Path) -> str:
    os.symlink(".", root / "train" / "dog" / "here")
    return "train/dog/here"


def _class_link_to_root(root: Path) -> str:
    os.symlink(str(root), root / "train" / "zzz")
    return "train/zzz"


def _link_to_filesystem_root(root: Path) -> str:
    os.symlink("/", root / "train" / "cat" / "everything")
    return "train/cat/everything"


def _file_link_to_itself(root: Path) -> str:
    os.symlink("self.png", root / "train" / "cat" / "self.png")
    return "train/cat/self.png"


def _two_links_in_a_cycle(root: Path) -> str:
    os.symlink("b.png", root / "train" / "dog" / "a.png")
    os.symlink("a.png", root / "train" / "dog" / "b.png")
    return "train/dog/a.png"


def _dangling_file_link(root: Path) -> str:
    os.symlink("missing.png", root / "train" / "cat" / "gone.png")
    return "train/cat/gone.png"


def _dangling_class_link(root: Path) -> str:
    os.symlink(str(root / "unmounted"), root / "train" / "emu")
    return "train/emu"


def _zero_bytes(root: Path) -> str:
    (root / "train" / "cat" / "empty.png").write_bytes(b"")
    return "train/cat/empty.png"


def _fifo(root: Path) -> str:
    os.mkfifo(root / "train" / "cat" / "pipe.png")
    return "train/cat/pipe.png"


def _same_folder_twice(root: Path) -> str:
    os.symlink(str(root / "train" / "cat"), root / "test" / "cat" / "more")
    return "test/cat/more"


BAD_ENTRIES: dict[str, tuple[Callable[[Path], str], str]] = {  # builder, reason
    "dir-link-to-parent": (_dir_link_to_parent, "(a loop)"),
    "dir-link-to-itself": (_dir_link_to_itself_level, "(a loop)"),
    "class-link-to-root": (_class_link_to_root, "(a loop)"),
    "link-to-/": (_link_to_filesystem_root, "(a loop)"),
    "file-link-to-itself": (_file_link_to_itself, "loops"),
    "two-file-links-cycle": (_two_links_in_a_cycle, "loops"),
    "dangling-file-link": (_dangling_file_link, "dangling symbolic link"),
    "dangling-class-link": (_dangling_class_link, "dangling symbolic link"),
    "zero-byte-image": (_zero_bytes, "empty file (0 bytes)"),
    "fifo-named-png": (_fifo, "not a regular file"),
    "same-folder-twice": (_same_folder_twice, "listed twice"),
}


def folder_args(root: Path, tmp_path: Path, *more: str) -> list[str]:
    return ["data.name=folder", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.val_fraction=0", *more]


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_bad_folder_entry_is_named_with_the_skip_option(case, tmp_path, capsys):
    build, reason = BAD_ENTRIES[case]
    root = good_folder(tmp_path / "data")
    rel = build(root)
    rc, err = inspect(capsys, tmp_path, *folder_args(root, tmp_path))
    assert_refused(rc, err, [str(root / rel), reason, "data.skip_bad_files=true"])


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_bad_folder_entry_is_skipped_and_counted(case, tmp_path, capsys):
    build, _ = BAD_ENTRIES[case]
    root = good_folder(tmp_path / "data")
    build(root)
    cfg = DataConfig(name="folder", root=str(root), cache_dir=str(tmp_path / "cache"),
                     val_fraction=0.0, skip_bad_files=True)
    d = load_data(cfg)
    assert d.class_names == ["cat", "dog"]
    assert d.y_train.tolist() == [0] * 4 + [1] * 4 and d.y_test.tolist() == [0, 0, 1, 1]
    n = 2 if case == "two-file-links-cycle" else 1  # both links of the cycle
    assert f"skipped {n} unreadable images or bad entries" in capsys.readouterr().err


FOLDER_ERRORS: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "one-class": (_one_class, ["train has only one class folder, cat/", "at least two"]),
    "no-train-folder": (_no_train, ["has no train/ folder", "move them into"]),
    "empty-class-folder": (_empty_class, ["train/emu holds no images"]),
    "only-non-images": (_only_non_images, ["train/emu holds no images"]),
    "dangling-train-link": (_dangling_train, ["train: a broken symbolic link"]),
    "loop-below-linked-train": (_train_links_to_root, ["train/cat/up", "(a loop)"]),
    "empty-val-folder": (_empty_val, ["val has no class folders", "data.val_fraction"]),
    "garbage-png": (_garbage_png, ["train/cat/fake.png", "data.skip_bad_files=true"]),
}


@pytest.mark.parametrize("case", sorted(FOLDER_ERRORS))
def test_bad_folder_layout_is_refused(case, tmp_path, capsys):
    build, needles = FOLDER_ERRORS[case]
    root = tmp_path / "data"
    build(root)
    rc, err = inspect(capsys, tmp_path, *folder_args(root, tmp_path))
    assert_refused(rc, err, [str(root), *needles])


def test_one_class_folder_is_refused_by_train_before_training(tmp_path, capsys):
    _one_class(tmp_path / "data")
    rc = main(["train", *folder_args(tmp_path / "data", tmp_path), "train.epochs=1",
               "run.progress=false", "run.tensorboard=false", f"run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert_refused(rc, err, [str(tmp_path / "data" / "train"), "only one class folder"])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_skipping_every_image_of_a_class_is_named(tmp_path, capsys):
    root = good_folder(tmp_path / "data")
    for f in (root / "train" / "dog").iterdir():
        f.write_bytes(b"")
    rc, err = inspect(capsys, tmp_path, *folder_args(root, tmp_path, "data.skip_bad_files=true"))
    assert_refused(rc, err, [str(root / "train" / "dog"), "skipped all 4 of its entries"])


# ------------------------------------------------------------------------------ split sizes


def write_npz(path: Path, y_train=None, y_test=(0, 1), **arrays) -> Path:
    """An .npz with grey 4x4 images for the labels (y_train default TEN); `arrays` override
    or add entries, None drops one (y_test=None: no y_test array)."""
    y = {"y_train": np.asarray(TEN if y_train is None else y_train),
         "y_test": np.asarray((0, 1) if y_test is None else y_test)}
    base = {**y, **{f"x_{s}": RNG.integers(0, 256, (len(y[f"y_{s}"]), 4, 4), dtype=np.uint8)
                    for s in ("train", "test")}}
    base.update(arrays)
    if y_test is None:
        del base["y_test"]
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path



SPLIT_ERRORS = {
    "val-fraction-empties-train": (
        "npz", ["data.val_fraction=0.99"],
        ["training split is empty", "data.val_fraction=0.99 moved 10 to validation",
         "train/val/test = 0/10/2"]),
    "val-fraction-rounds-to-zero": (
        "npz", ["data.val_fraction=0.01"],
        ["data.val_fraction=0.01 of the 10 training images rounds to 0", "data.val_fraction=0 ",
         "data.val_fraction=0.1 "]),
    "test-fraction-rounds-to-zero": (
        "folder", ["data.test_fraction=0.01", "data.val_fraction=0"],
        ["data.test_fraction=0.01 of 10 images rounds to 0", "at least 0.1"]),
    "carving-leaves-one-class": (
        "folder", ["data.test_fraction=0.5", "data.val_fraction=0.9"],
        ["training split holds images of only one class", "after carving",
         "data.test_fraction=0.5 moved 5 to test", "data.val_fraction=0.9 moved 4 to validation"]),
}


@pytest.mark.parametrize("case", sorted(SPLIT_ERRORS))
def test_empty_or_one_class_split_names_the_keys_and_counts(case, tmp_path, capsys):
    kind, overrides, needles = SPLIT_ERRORS[case]
    if kind == "npz":
        root = write_npz(tmp_path / "d.npz", TEN)
    else:  # train/ only: 5 cat + 5 dog, test carved out
        root = tmp_path / "data"
        for cls in ("cat", "dog"):
            pngs(root / "train" / cls, 5)
    args = [f"data.name={kind}", f"data.root={root}", f"data.cache_dir={tmp_path / 'c'}"]
    rc, err = inspect(capsys, tmp_path, *args, *overrides)
    assert_refused(rc, err, [str(root), *needles])


def test_digits_val_fraction_near_one_is_refused():
    from trainlab.errors import DataError

    with pytest.raises(DataError, match=r"data.name=digits: the training split holds images of "
                                        r"only one class .*data.val_fraction=0.999 moved"):
        load_data(DataConfig(name="digits", val_fraction=0.999))


def test_labels_fraction_keeps_a_class_balanced_nonempty_train(tmp_path):
    path = write_npz(tmp_path / "d.npz", TEN)
    d = load_data(DataConfig(name="npz", root=str(path), val_fraction=0.0, labels_fraction=1e-9))
    assert sorted(d.y_train.tolist()) == [0, 1]


# ------------------------------------------------------------------------------ npz


NPZ_ERRORS = {
    "all-labels-equal": (dict(y_train=np.zeros(10, int)), ["'y_train' is 0", "one class"]),
    "all-labels-three": (dict(y_train=np.full(10, 3), y_test=np.array([0, 3])),
                         ["'y_train' is 3", "one class"]),
    "one-class-name": (dict(class_names=np.array(["only"])), ["'class_names' lists 1 class"]),
    "missing-y-test": (dict(y_test=None), ["lacks the arrays y_test"]),
    "length-mismatch": (dict(x_train=np.zeros((3, 4, 4), np.uint8)),
                        ["'y_train' has shape (10,)", "expected [3]"]),
    "labels-2d-one-hot": (dict(y_train=np.eye(2, dtype=int)[TEN]), ["'y_train'", "(10, 2)"]),
    "images-2d": (dict(x_train=np.zeros((10, 16), np.uint8)), ["'x_train'", "(10, 16)"]),
    "images-5d": (dict(x_train=np.zeros((10, 1, 4, 4, 1), np.uint8)), ["'x_train'",
                                                                        "cannot tell"]),
    "zero-size-images": (dict(x_train=np.zeros((10, 0, 4), np.uint8)), ["'x_train'",
                                                                       "zero size"]),
    "float-labels": (dict(y_train=np.array(TEN, np.float64)), ["'y_train'", "float64"]),
    "bool-labels": (dict(y_train=np.array(TEN, bool)), ["'y_train'", "bool"]),
    "negative-label": (dict(y_test=np.array([0, -1])), ["'y_test'", "negative label -1"]),
    "huge-label": (dict(y_test=np.array([0, 10**9])), ["'y_test'", "1000000000",
                                                       "np.unique(y, return_inverse=True)"]),
    "label-beyond-names": (dict(class_names=np.array(["a", "b"]), y_test=np.array([0, 2])),
                           ["'y_test' has label 2", "2 classes"]),
    "float-images-normalized": (dict(x_train=RNG.normal(size=(10, 4, 4)).astype(np.float32)),
                                ["'x_train' is float32", "outside 0..255", "normalization"]),
    "float-images-nan": (dict(x_train=np.full((10, 4, 4), np.nan, np.float32)),
                         ["'x_train' is float32", "NaN or infinite"]),
    "float-images-some-inf": (dict(x_train=np.where(np.eye(4) > 0, np.inf, 0.5)[None]
                                   .repeat(10, 0)), ["'x_train' is float64", "40 NaN or infinite",
                                                     "nan_to_num"]),
    "float-images-0-1": (dict(x_test=np.full((2, 4, 4), 0.5)), ["'x_test' is float64",
                                                                "(x * 255).round()"]),
    "int16-images": (dict(x_train=np.full((10, 4, 4), 300, np.int16)),
                     ["'x_train' is int16", "values 300..300", "outside 0..255"]),
    "bool-images": (dict(x_train=np.ones((10, 4, 4), bool)), ["'x_train' is bool",
                                                              "astype(np.uint8) * 255"]),
    "empty-x-train": (dict(x_train=np.zeros((0, 4, 4), np.uint8), y_train=np.zeros(0, int)),
                      ["'x_train' holds no images"]),
    "empty-x-test": (dict(x_test=np.zeros((0, 4, 4), np.uint8), y_test=np.zeros(0, int)),
                     ["'x_test' holds no images"]),
}


@pytest.mark.parametrize("case", sorted(NPZ_ERRORS))
def test_bad_npz_names_the_file_and_the_array(case, tmp_path, capsys):
    arrays, needles = NPZ_ERRORS[case]
    path = write_npz(tmp_path / "bad.npz", **arrays)
    rc, err = inspect(capsys, tmp_path, "data.name=npz", f"data.root={path}")
    assert_refused(rc, err, [str(path), *needles])


@pytest.mark.parametrize("content, needle", [
    (b"this is not a zip archive", "Cannot read"),
    (b"", "Cannot read"),
], ids=["garbage", "empty-file"])
def test_unreadable_npz_is_named(content, needle, tmp_path, capsys):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    rc, err = inspect(capsys, tmp_path, "data.name=npz", f"data.root={path}")
    assert_refused(rc, err, [str(path), needle])


# ------------------------------------------------------------------------------ warnings


def test_label_gaps_warn_with_the_class_count_and_still_load(tmp_path, capsys):
    path = write_npz(tmp_path / "gaps.npz", [0, 5000] * 5, (0, 5000))
    d = load_data(DataConfig(name="npz", root=str(path), val_fraction=0.0))
    assert d.num_classes == 5001
    lines = warnings(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert str(path) in lines[0] and "5001 classes" in lines[0]
    assert "4999 of which have no image" in lines[0] and "2 of the 5001 class ids" in lines[0]


def test_label_gaps_train_through_the_cli(tmp_path, capsys):
    path = write_npz(tmp_path / "gaps.npz", [0, 7] * 8, (0, 7, 0, 7))
    rc = main(["train", "data.name=npz", f"data.root={path}", "data.val_fraction=0",
               "model.name=mlp", "model.hidden=[8]", "train.epochs=1", "run.progress=false",
               "run.tensorboard=false", f"run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert any("8 classes, 6 of which have no image" in w for w in warnings(err)), err


def test_class_carved_out_of_train_warns(tmp_path, capsys):
    # 10 + 10 + 1 images, val 0.6: quotas 6, 6, 0 plus one by largest remainder (class 2's 0.6)
    path = write_npz(tmp_path / "rare.npz", [0] * 10 + [1] * 10 + [2], (0, 1, 2))
    d = load_data(DataConfig(name="npz", root=str(path), val_fraction=0.6))
    assert 2 not in d.y_train.tolist() and 2 in d.y_val.tolist()
    lines = warnings(capsys.readouterr().err)
    assert len(lines) == 1 and "no training image left after carving ('2')" in lines[0], lines
    assert "data.val_fraction=0.6 moved 13 to validation" in lines[0]


def test_class_only_in_test_warns(tmp_path, capsys):
    path = write_npz(tmp_path / "d.npz", TEN, (0, 1, 2))
    load_data(DataConfig(name="npz", root=str(path), val_fraction=0.0))
    lines = warnings(capsys.readouterr().err)
    assert len(lines) == 1 and "no training image ('2')" in lines[0], lines


def test_good_data_gives_no_warning(tmp_path, capsys):
    load_data(DataConfig(name="npz", root=str(write_npz(tmp_path / "d.npz", TEN)),
                         val_fraction=0.2))
    load_data(DataConfig(name="folder", root=str(good_folder(tmp_path / "f")),
                         cache_dir=str(tmp_path / "c"), val_fraction=0.0))
    assert warnings(capsys.readouterr().err) == []


# ------------------------------------------------------------------------------ IDX


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file: magic 00 00 <dtype code> <ndim>, big-endian uint32 sizes, the values."""
    return bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes() + arr.tobytes()


def write_mnist(root: Path, y_train: np.ndarray | None = None, n_test: int = 6) -> dict[str, Path]:
    """root/{train,t10k}-{images,labels}-idx?-ubyte, zero 28x28 images; returns the paths."""
    y_tr = np.arange(20, dtype=np.uint8) % 10 if y_train is None else y_train
    arrays = {"train-images-idx3-ubyte": np.zeros((len(y_tr), 28, 28), np.uint8),
              "train-labels-idx1-ubyte": y_tr,
              "t10k-images-idx3-ubyte": np.zeros((n_test, 28, 28), np.uint8),
              "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10}
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        (root / name).write_bytes(idx_bytes(arr))
    return {name: root / name for name in arrays}


def _truncate(p: dict[str, Path]) -> Path:
    f = p["train-images-idx3-ubyte"]
    f.write_bytes(f.read_bytes()[:-100])
    return f


def _count_mismatch(p: dict[str, Path]) -> Path:
    f = p["t10k-labels-idx1-ubyte"]
    f.write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    return f


def _wrong_magic(p: dict[str, Path]) -> Path:
    f = p["train-labels-idx1-ubyte"]
    f.write_bytes(b"\x12\x34" + f.read_bytes()[2:])
    return f


def _bad_gzip(p: dict[str, Path]) -> Path:
    f = p["t10k-images-idx3-ubyte"]
    f.unlink()
    f = f.with_name(f.name + ".gz")
    f.write_bytes(b"\x1f\x8b\x08\x00 cut short")
    return f


def _label_too_big(p: dict[str, Path]) -> Path:
    f = p["train-labels-idx1-ubyte"]
    f.write_bytes(idx_bytes(np.full(20, 10, np.uint8)))
    return f


def _labels_as_images(p: dict[str, Path]) -> Path:
    f = p["train-labels-idx1-ubyte"]
    f.write_bytes(idx_bytes(np.zeros((20, 28, 28), np.uint8)))
    return f


def _huge_header(p: dict[str, Path]) -> Path:
    f = p["train-images-idx3-ubyte"]
    f.write_bytes(bytes([0, 0, 8, 3]) + np.array([2**32 - 1] * 3, ">u4").tobytes())
    return f


def _empty_file(p: dict[str, Path]) -> Path:
    f = p["t10k-labels-idx1-ubyte"]
    f.write_bytes(b"")
    return f


IDX_ERRORS = {
    "truncated": (_truncate, ["is truncated"]),
    "count-mismatch": (_count_mismatch, ["expected uint8 [6]"]),
    "wrong-magic": (_wrong_magic, ["wrong magic number"]),
    "bad-gzip": (_bad_gzip, ["truncated or corrupt gzip"]),
    "label-too-big": (_label_too_big, ["has label 10, expected 0..9"]),
    "labels-file-holds-images": (_labels_as_images, ["(20, 28, 28)"]),
    "header-claims-too-much": (_huge_header, ["is truncated"]),
    "empty-file": (_empty_file, ["wrong magic number empty"]),
}


@pytest.mark.parametrize("case", sorted(IDX_ERRORS))
def test_bad_idx_names_the_file(case, tmp_path, capsys):
    damage, needles = IDX_ERRORS[case]
    bad = damage(write_mnist(tmp_path / "m"))
    rc, err = inspect(capsys, tmp_path, "data.name=mnist", f"data.root={tmp_path / 'm'}")
    assert_refused(rc, err, [str(bad), *needles])


def test_idx_with_one_class_is_refused(tmp_path, capsys):
    write_mnist(tmp_path / "m", y_train=np.full(20, 4, np.uint8))
    rc, err = inspect(capsys, tmp_path, "data.name=mnist", f"data.root={tmp_path / 'm'}",
                      "data.val_fraction=0")
    assert_refused(rc, err, [f"data.name=mnist (data.root={tmp_path / 'm'})", "only one class",
                             "'4'"])


# ------------------------------------------------------------------------------ CIFAR


def write_cifar10(folder: Path, labels: list[int] | None = None, **meta) -> Path:
    """cifar-10-batches-py with 4 images per batch (str keys, as a re-pickled set has)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
             "test_batch"]
    for name in names:
        y = list(labels if labels is not None else [0, 1, 2, 3])
        batch = {"data": np.zeros((len(y), 3072), np.uint8), "labels": y}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    info = {"label_names": [f"c{i}" for i in range(10)], **meta}
    (folder / "batches.meta").write_bytes(pickle.dumps(info, protocol=4))
    return folder


def _cifar_mismatch(folder: Path) -> Path:
    f = folder / "data_batch_3"
    f.write_bytes(pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1]}))
    return f


def _cifar_truncated(folder: Path) -> Path:
    f = folder / "test_batch"
    f.write_bytes(f.read_bytes()[:50])
    return f


def _cifar_label_range(folder: Path) -> Path:
    f = folder / "data_batch_1"
    f.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}))
    return f


def _cifar_names_not_a_list(folder: Path) -> Path:
    f = folder / "batches.meta"
    f.write_bytes(pickle.dumps({"label_names": 10}))
    return f


def _cifar_wrong_row_size(folder: Path) -> Path:
    f = folder / "data_batch_2"
    f.write_bytes(pickle.dumps({"data": np.zeros((4, 1024), np.uint8), "labels": [0] * 4}))
    return f


CIFAR_ERRORS = {
    "count-mismatch": (_cifar_mismatch, ["'labels'", "expected 4 integers"]),
    "truncated": (_cifar_truncated, ["truncated or corrupt"]),
    "label-out-of-range": (_cifar_label_range, ["label 10, expected 0..9"]),
    "names-not-a-list": (_cifar_names_not_a_list, ["'label_names' is int",
                                                   "list of class names"]),
    "wrong-row-size": (_cifar_wrong_row_size, ["(4, 1024)", "[N, 3072]"]),
}


@pytest.mark.parametrize("case", sorted(CIFAR_ERRORS))
def test_bad_cifar_names_the_file(case, tmp_path, capsys):
    damage, needles = CIFAR_ERRORS[case]
    bad = damage(write_cifar10(tmp_path / "cifar-10-batches-py"))
    rc, err = inspect(capsys, tmp_path, "data.name=cifar10", f"data.root={tmp_path}")
    assert_refused(rc, err, [str(bad), *needles])


def test_cifar_with_one_class_is_refused(tmp_path, capsys):
    write_cifar10(tmp_path / "cifar-10-batches-py", labels=[7, 7])
    rc, err = inspect(capsys, tmp_path, "data.name=cifar10", f"data.root={tmp_path}",
                      "data.val_fraction=0")
    assert_refused(rc, err, [f"data.name=cifar10 (data.root={tmp_path})", "only one class",
                             "'c7'"])

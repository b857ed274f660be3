"""Acceptance: a folder of 10,000 Fashion-MNIST PNGs trains like the same images as arrays."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainlab.config.load import build_config
from trainlab.data import load_data
from trainlab.data.sources import SOURCES, Source, make_splits, read_idx, source_names
from trainlab.data.sources.idx import FASHION_MNIST_ROOT
from trainlab.engine.run import train

FM = Path(FASHION_MNIST_ROOT)
N_TRAIN, N_TEST = 9000, 1000


def fashion_subset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first 9,000 train and 1,000 test images (uint8 [N, 28, 28]) and labels, each split
    stably sorted by label: the order a class-folder listing gives, so both sources carve the
    same validation images and shuffle the same way (the comparison is then about the data
    path, not about split noise)."""
    x_tr = read_idx(FM / "train-images-idx3-ubyte.gz")[:N_TRAIN]
    y_tr = read_idx(FM / "train-labels-idx1-ubyte.gz")[:N_TRAIN].astype(np.int64)
    x_te = read_idx(FM / "t10k-images-idx3-ubyte.gz")[:N_TEST]
    y_te = read_idx(FM / "t10k-labels-idx1-ubyte.gz")[:N_TEST].astype(np.int64)
    o_tr, o_te = np.argsort(y_tr, kind="stable"), np.argsort(y_te, kind="stable")
    return x_tr[o_tr], y_tr[o_tr], x_te[o_te], y_te[o_te]


def write_folder(root: Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
    """root/split/<label>/<position>.png for every image (position keeps the order)."""
    for c in np.unique(y):
        (root / split / str(c)).mkdir(parents=True)

    def save(i: int) -> None:
        Image.fromarray(x[i]).save(root / split / str(y[i]) / f"{i:05d}.png", compress_level=1)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(save, range(len(x))))


@pytest.mark.skipif(not (FM / "train-images-idx3-ubyte.gz").is_file(),
                    reason=f"Fashion-MNIST not installed in {FM} (apt-get install "
                           f"dataset-fashion-mnist)")
def test_png_folder_trains_to_the_accuracy_of_the_same_arrays(tmp_path, monkeypatch):
    x_tr, y_tr, x_te, y_te = fashion_subset()
    root = tmp_path / "fashion-png"
    write_folder(root, "train", x_tr, y_tr)
    write_folder(root, "test", x_te, y_te)
    folder_data = ["data.name=folder", f"data.root={root}", f"data.cache_dir={tmp_path / 'c'}"]

    loaded = load_data(build_config(None, folder_data).data)  # the PNGs hold the arrays exactly
    assert torch.equal(loaded.x_test, torch.from_numpy(x_te[:, None]))
    assert loaded.class_names == [str(c) for c in range(10)] and len(loaded.y_val) == 900

    if "npz" in source_names():
        np.savez(tmp_path / "fashion.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
        array_data = ["data.name=npz", f"data.root={tmp_path / 'fashion.npz'}"]
    else:  # the npz source is not there yet: the same arrays through an in-test source
        names = [str(c) for c in range(10)]
        load = lambda cfg: make_splits("arrays", x_tr[:, None], y_tr, x_te[:, None],  # noqa: E731
                                       y_te, cfg, names)
        monkeypatch.setitem(SOURCES, "test-arrays", Source(load, {}, "test arrays"))
        array_data = ["data.name=test-arrays"]

    recipe = ["model.name=mlp", "train.epochs=2", "train.batch_size=128", "run.seed=3",
              "run.device=cpu", "run.progress=false", "run.tensorboard=false",
              "data.crop_padding=2", "data.flip=true", "data.rotate_deg=0", "data.brightness=0",
              "data.contrast=0"]
    acc_folder = train(build_config(None, [*recipe, *folder_data,
                                           f"run.dir={tmp_path / 'run-folder'}"]))["test_acc"]
    acc_array = train(build_config(None, [*recipe, *array_data,
                                          f"run.dir={tmp_path / 'run-array'}"]))["test_acc"]
    assert acc_array > 0.7, f"the recipe should learn Fashion-MNIST, got {acc_array:.3f}"
    assert abs(acc_folder - acc_array) <= 0.005, (acc_folder, acc_array)


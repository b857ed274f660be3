"""The file-backed loader: DeviceLoader's order, per-sample seeded transforms, exact resume."""

from __future__ import annotations

import signal

import pytest
import torch
from conftest import quick

from trainlab.config.load import build_config
from trainlab.config.schema import Config, DataConfig
from trainlab.config.validate import validate
from trainlab.data.file_loader import FileLoader, Pipeline, resolve_pipeline
from trainlab.data.loader import DeviceLoader
from trainlab.data.sources.base import ImageFiles
from trainlab.engine import trainer as trainer_mod
from trainlab.engine.run import train
from trainlab.engine.trainer import Interrupted
from trainlab.errors import ConfigError

N, B = 53, 8
X = torch.randint(0, 256, (N, 1, 6, 6), dtype=torch.uint8,
                  generator=torch.Generator().manual_seed(0))
Y = torch.arange(N)  # label = sample index, to track samples
MEAN, STD = [0.5], [0.25]
AUG = Pipeline(size=(6, 6), random=True, crop_scale=(0.5, 1.0), flip=True, rotate_deg=10.0,
               brightness=0.2, contrast=0.2, auto_augment="trivialaugment", random_erasing=0.5)


class ListFiles(ImageFiles):
    """In-memory stand-in for image files; counts reads to show which samples were decoded."""

    def __init__(self, images: list[torch.Tensor]) -> None:
        self.images, self.reads = images, 0
        sizes = {tuple(im.shape[1:]) for im in images}
        h, w = sizes.pop() if len(sizes) == 1 else (0, 0)
        self.shape = (len(images), int(images[0].shape[0]), h, w)

    def __len__(self) -> int:
        return len(self.images)

    def read(self, i: int) -> torch.Tensor:
        self.reads += 1
        return self.images[i]


def weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def file_loader(x=X, **kw) -> FileLoader:
    return FileLoader(x, Y, B, MEAN, STD, **{"shuffle": True, "num_workers": 0, **kw})


def batches(ld, epoch, start=0):
    return [(x.clone(), y.clone()) for x, y, _ in ld.epoch(epoch, start)]


def assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


@pytest.mark.parametrize("source", ["tensor", "files"])
def test_without_augmentation_batches_equal_the_device_loader(source):
    x = X if source == "tensor" else ListFiles(list(X))
    for shuffle in (True, False):
        dev = DeviceLoader(X, Y, B, MEAN, STD, shuffle=shuffle, seed=3)
        fil = file_loader(x, shuffle=shuffle, seed=3)
        assert len(fil) == len(dev) == (N // B if shuffle else -(-N // B))
        for epoch in (0, 1):
            assert_same(batches(fil, epoch), batches(dev, epoch))
    # and a pipeline that has nothing to do (eval, images already at size) changes nothing
    fil = file_loader(x, pipeline=Pipeline(size=(6, 6), random=False), seed=3)
    assert_same(batches(fil, 2), batches(DeviceLoader(X, Y, B, MEAN, STD, shuffle=True, seed=3),
                                          2))


def test_start_skips_batches_without_decoding_and_reproduces_augmentation():
    files = ListFiles(list(X))
    ld = file_loader(files, pipeline=AUG)
    full = batches(ld, 5)
    files.reads = 0
    rest = batches(ld, 5, start=4)
    assert files.reads == (len(full) - 4) * B  # the first 4 batches were never read
    assert_same(rest, full[4:])
    # augmentation is on: images differ from the plain ones, and from another epoch's
    plain = (X[full[0][1]].float() / 255 - 0.5) / 0.25
    assert (full[0][0] != plain).flatten(1).any(1).float().mean() > 0.5
    assert not torch.equal(full[0][0], batches(ld, 6)[0][0])


def test_worker_count_does_not_change_augmented_batches():
    one = batches(file_loader(pipeline=AUG, num_workers=0), 1)
    two = file_loader(pipeline=AUG, num_workers=2)
    assert_same(batches(two, 1), one)
    assert_same(batches(two, 1, start=2), one[2:])  # persistent workers, second pass


def test_rank_slices_concatenate_to_the_single_process_batch():
    single = batches(file_loader(pipeline=AUG), 0)
    r0 = batches(file_loader(pipeline=AUG, rank=0, world_size=2), 0)
    r1 = batches(file_loader(pipeline=AUG, rank=1, world_size=2), 0)
    for (x, y), (x0, y0), (x1, y1) in zip(single, r0, r1, strict=True):
        assert len(y0) == len(y1) == B // 2
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)


def test_eval_loader_covers_every_sample_once_in_order():
    ld = file_loader(shuffle=False, pipeline=resolve_pipeline(DataConfig(), X.shape, False))
    bs = batches(ld, 0)
    assert len(bs) == len(ld) == -(-N // B)
    assert torch.equal(torch.cat([y for _, y in bs]), Y)
    assert torch.allclose(torch.cat([x for x, _ in bs]), (X.float() / 255 - 0.5) / 0.25)


def test_random_erasing_sets_one_box_to_the_channel_mean():
    """Erasing runs after normalization: the box holds 0 (= the mean), the rest is untouched."""
    pipe = Pipeline(size=(6, 6), random=True, crop_scale=(1.0, 1.0), random_erasing=1.0)
    (x, y), *_ = batches(file_loader(pipeline=pipe), 0)  # scale 1 on a square: no crop
    plain = (X[y].float() / 255 - 0.5) / 0.25
    for img, ref in zip(x, plain, strict=True):
        box = img[0] != ref[0]
        assert box.any() and (img[0][box] == 0).all()
        rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
        h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert box.sum() == h * w <= 0.34 * 36  # one full box of at most a third


def test_resize_and_center_crop_to_image_size():
    cfg = DataConfig(image_size=4)
    wide = torch.zeros(1, 6, 30, dtype=torch.uint8)
    wide[:, :, 10:20] = 200  # three vertical bands; the centre crop keeps only the middle one
    images = [wide, torch.full((1, 9, 5), 7, dtype=torch.uint8)] * 5
    files = ListFiles(images)
    assert files.shape == (10, 1, 0, 0)
    ld = FileLoader(files, torch.zeros(10, dtype=torch.int64), 4, [0.0], [1.0], shuffle=False,
                    pipeline=resolve_pipeline(cfg, files.shape, train=False), num_workers=0)
    (x, _), *_ = batches(ld, 0)
    assert x.shape == (4, 1, 4, 4)
    assert torch.equal(x[0], torch.full((1, 4, 4), 200 / 255))
    assert torch.equal(x[1], torch.full((1, 4, 4), 7 / 255))
    train_ld = FileLoader(files, torch.zeros(10, dtype=torch.int64), 4, [0.0], [1.0],
                          shuffle=True, pipeline=resolve_pipeline(cfg, files.shape, train=True),
                          num_workers=0)
    assert next(iter(train_ld.epoch(0)))[0].shape == (4, 1, 4, 4)


def test_bad_pipeline_settings_name_their_key():
    with pytest.raises(ConfigError, match="data.image_size"):
        resolve_pipeline(DataConfig(), (10, 3, 0, 0), train=False)
    with pytest.raises(ConfigError, match="data.image_size"):
        FileLoader(ListFiles([X[0], X[0, :, :4]]), Y[:2], 2, MEAN, STD, shuffle=False)
    # ranges are the schema's (checked before anything is built; resolve_pipeline trusts them)
    with pytest.raises(ConfigError, match="data.auto_augment .*randaugment, trivialaugment"):
        validate(Config(data=DataConfig(auto_augment="autoaugment")))
    with pytest.raises(ConfigError, match="data.crop_scale"):
        validate(Config(data=DataConfig(crop_scale=[0.9, 0.1])))
    with pytest.raises(ConfigError, match="data.random_erasing"):
        validate(Config(data=DataConfig(random_erasing=1.5)))


def test_file_pipeline_keys_on_in_memory_data_say_how_to_use_them(tmp_path):
    for key in ("data.auto_augment=randaugment", "data.random_erasing=0.25"):
        with pytest.raises(ConfigError, match="data.in_memory=false"):
            train(build_config(None, quick(tmp_path, key)))
    with pytest.raises(ConfigError, match="data.auto_augment must be one of.*'bogus'"):
        train(build_config(None, quick(tmp_path, "data.auto_augment=bogus")))


def test_file_backed_digits_trains_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    """data.in_memory=false: TrivialAugment + crop in a worker, RandomErasing on the device. A run
    stopped in the middle of epoch 2 and resumed ends with exactly the straight run's weights."""
    over = ["data.in_memory=false", "data.auto_augment=trivialaugment", "model.name=mlp",
            "train.epochs=2", "data.num_workers=1", "data.crop_scale=[0.35,1.0]",
            "data.rotate_deg=0", "data.brightness=0", "data.contrast=0",
            "data.random_erasing=0.1", "train.batch_size=128", "optim.lr=4e-3"]
    straight = train(build_config(None, quick(tmp_path / "a", *over)))
    assert straight["test_acc"] > 0.7 and straight["steps"] == 2 * (1294 // 128)

    orig = trainer_mod.Trainer._set_lr

    def stop_at_step_15(self, step):  # called before each optimizer step; stops after it
        if step == 15:
            self.stop.signum = signal.SIGTERM
        return orig(self, step)

    monkeypatch.setattr(trainer_mod.Trainer, "_set_lr", stop_at_step_15)
    with pytest.raises(Interrupted):
        train(build_config(None, quick(tmp_path / "b", *over)))
    monkeypatch.setattr(trainer_mod.Trainer, "_set_lr", orig)
    ck = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    assert ck["state"]["epoch"] == 1 and ck["state"]["batch"] == 16 - 10
    resumed = train(build_config(None, quick(tmp_path / "b", *over, "run.resume=auto")))
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_acc"] == straight["test_acc"] and resumed["steps"] == straight["steps"]

"""From a data config to batches: load the splits, normalization stats, and the loader of a split.

The choice between the two loaders lives here, once: a split held in memory (uint8 tensor) goes
to the `DeviceLoader` (data on the device, tensor-op augmentation); a file-backed split
(`ImageFiles`) or `data.in_memory=false` goes to the `FileLoader` (DataLoader workers,
torchvision transforms). Every other layer asks a `DataBundle` for "a loader of split S".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from trainlab.config.schema import DataConfig
from trainlab.data.augment import AugmentSpec, resolve_augment
from trainlab.data.file_loader import FileLoader, resolve_pipeline
from trainlab.data.loader import DeviceLoader
from trainlab.data.mix import MixSpec, resolve_mix
from trainlab.data.sources import DataSplits, ImageFiles, load_data
from trainlab.data.stats import channel_stats
from trainlab.errors import ConfigError

Loader = DeviceLoader | FileLoader
SPLITS = ("train", "val", "test")


def make_loader(x: torch.Tensor | ImageFiles, y: torch.Tensor, batch_size: int, mean: list[float],
                std: list[float], data_cfg: DataConfig, device: torch.device, *,
                file_backed: bool, shuffle: bool = False, augment: AugmentSpec | None = None,
                mix: MixSpec | None = None, seed: int = 0, rank: int = 0,
                world_size: int = 1) -> Loader:
    """The in-memory DeviceLoader or the file-backed FileLoader over (x, y).

    x: uint8 [N, C, H, W] or ImageFiles; y: int64 [N]. `batch_size` is the global batch: with
    several ranks each takes its slice of every batch. Passing `augment` (training) also turns
    on the file-backed pipeline's random transforms.
    """
    common = dict(shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, mix=mix)
    pipeline = resolve_pipeline(data_cfg, tuple(x.shape), train=augment is not None)
    if file_backed:
        return FileLoader(x, y, batch_size, mean, std, pipeline=pipeline, device=device,
                          num_workers=data_cfg.num_workers, **common)
    if pipeline.auto_augment != "none" or pipeline.random_erasing > 0:
        raise ConfigError(
            f"data.auto_augment={pipeline.auto_augment} / data.random_erasing="
            f"{pipeline.random_erasing:g} run in the file-backed pipeline only, but this data "
            f"set is held in memory. Set data.in_memory=false to use them (or leave them at "
            f"none / 0 for the on-device augmentation).")
    return DeviceLoader(x.to(device), y.to(device), batch_size, mean, std, augment=augment,
                        **common)


@dataclass
class DataBundle:
    """A loaded data set with its normalization, for one rank on one device.

    mean/std: per channel, in [0, 1] pixel units (from the training split, or reused from a
    checkpoint). height/width: the size batches have (data.image_size, else the stored size).
    """

    data: DataSplits
    mean: list[float]
    std: list[float]
    height: int
    width: int
    device: torch.device
    cfg: DataConfig = field(default_factory=DataConfig)
    rank: int = 0
    world_size: int = 1

    @property
    def channels(self) -> int:
        return self.data.channels

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def split(self, split: str) -> tuple[torch.Tensor | ImageFiles, torch.Tensor]:
        """(images, labels) of `split` (train, val or test)."""
        return getattr(self.data, f"x_{split}"), getattr(self.data, f"y_{split}")

    def file_backed(self, split: str) -> bool:
        """True when `split` loads through DataLoader workers (ImageFiles, or
        data.in_memory=false); otherwise it lives on the device as uint8."""
        return isinstance(self.split(split)[0], ImageFiles) or self.cfg.in_memory is False

    def loader(self, split: str, batch_size: int, **kw: Any) -> Loader:
        """Batches of `split` for this rank (see `make_loader` for the keywords)."""
        x, y = self.split(split)
        return make_loader(x, y, batch_size, self.mean, self.std, self.cfg, self.device,
                           file_backed=self.file_backed(split), rank=self.rank,
                           world_size=self.world_size, **kw)

    def full_loader(self, split: str, batch_size: int) -> Loader:
        """All of `split` in order, unaugmented, for this process alone (not split across
        ranks): feature banks, pictures."""
        x, y = self.split(split)
        return make_loader(x, y, batch_size, self.mean, self.std, self.cfg, self.device,
                           file_backed=self.file_backed(split))

    def train_loader(self, batch_size: int, seed: int, subset: list[int] | None = None) -> Loader:
        """The training loader (augmentation and mixing on), shuffled by `seed`. With `subset`:
        those training images only, in that order, one batch per epoch (previews: epoch e =
        augmented view e), on this process alone."""
        aug = resolve_augment(self.cfg)
        mix = resolve_mix(self.cfg, self.num_classes)
        if subset is None:
            return self.loader("train", batch_size, shuffle=True, augment=aug, seed=seed,
                               mix=mix)
        x, y = self.split("train")
        xs = x[subset] if isinstance(x, torch.Tensor) else torch.stack([x.read(i) for i in subset])
        return make_loader(xs, y[subset], len(subset), self.mean, self.std, self.cfg,
                           self.device, file_backed=self.file_backed("train"), augment=aug,
                           mix=mix, seed=seed)

    def info(self) -> dict[str, Any]:
        """What a checkpoint and data.json record about the data (a run's data identity)."""
        return {"name": self.data.name, "mean": self.mean, "std": self.std,
                "class_names": self.data.class_names, "channels": self.channels,
                "height": self.height, "width": self.width, "num_classes": self.num_classes}


def check_colour(cfg: DataConfig, channels: int) -> None:
    """ConfigError naming data.saturation / data.hue when set above 0 for grey (1-channel)
    images, where they have no meaning (a grey pixel has no saturation or hue). `data.augment=
    false` switches them off, so then nothing is refused."""
    if channels != 1 or not cfg.augment:
        return
    for name in ("saturation", "hue"):
        value = getattr(cfg, name)
        if value:
            raise ConfigError(
                f"data.{name}={value:g} needs colour images, but data.name={cfg.name} has 1 "
                f"channel (grey). Set data.{name}=0 (or null), or data.channels=3 to turn the "
                f"grey images into RGB first.")


def load_bundle(cfg: DataConfig, device: torch.device,
                stats: tuple[list[float], list[float]] | None = None, rank: int = 0,
                world_size: int = 1) -> DataBundle:
    """Load the splits of `cfg` and compute (or reuse `stats`, e.g. from a checkpoint) the
    normalization: `data.normalize=channel` takes the per-channel mean/std of the training
    split, `none` mean 0 and std 1 per channel (the loaders then feed raw [0, 1] pixels)."""
    data = load_data(cfg)
    check_colour(cfg, data.channels)
    if stats is not None:
        mean, std = stats
    elif cfg.normalize == "none":
        mean, std = [0.0] * data.channels, [1.0] * data.channels
    else:
        mean, std = channel_stats(data.x_train)
    h = cfg.image_size or data.height
    w = cfg.image_size or data.width
    if not h or not w:
        raise ConfigError(
            f"The images of data.name={data.name} have different sizes; set data.image_size "
            f"(for example data.image_size=224) so batches and the model have one size.")
    return DataBundle(data, list(mean), list(std), h, w, device, cfg, rank, world_size)

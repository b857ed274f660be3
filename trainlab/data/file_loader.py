"""File-backed loader: images decoded and augmented per sample in DataLoader workers.

Same interface and the same determinism contract as `DeviceLoader`: the order of an epoch is
`torch.randperm(N, generator=epoch_generator(seed, epoch))`, batch `i` is positions
[i*B, (i+1)*B) of it, and `epoch(epoch, start)` begins at batch `start` without decoding the
batches before it. Every sample's random transform runs with the CPU generator seeded with
`sample_seed(seed, epoch, position)`, so its pixels depend only on (seed, epoch, position): not
on the number of workers, their scheduling, or the rank that loads it.

Workers return uint8 [C, H, W] (cheap to copy and pin); conversion to float, normalization,
RandomErasing (after normalization, filling with 0 = the channel mean) and Mixup/CutMix happen
on the device, per batch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from trainlab.config.schema import DataConfig
from trainlab.data.augment import resolve_augment
from trainlab.data.keys import MASK64, SampleKeys, contiguous_keys, splitmix64
from trainlab.data.loader import BatchesBase, epoch_generator, grey_as_channels_last
from trainlab.data.mix import MixSpec, mix_batch, mix_generator
from trainlab.data.sources.base import ImageFiles
from trainlab.errors import ConfigError


def default_num_workers() -> int:
    """The CPUs this process may use (honours taskset and Slurm's --cpus-per-task)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """Seed in [0, 2**64) of the random transform of the sample at `position` of `epoch`."""
    return splitmix64(splitmix64(splitmix64(seed & MASK64) ^ epoch) ^ position)


@dataclass(frozen=True)
class Pipeline:
    """Per-sample transforms of the file-backed loader (units in the comments).

    random=False: Resize(shorter side) + CenterCrop to `size` (nothing when images already
    have that size). random=True: RandomResizedCrop, then flip / rotation / colour jitter /
    auto-augment where on, and RandomErasing with probability `random_erasing`.
    """

    size: tuple[int, int]  # output (H, W), pixels
    random: bool  # training augmentation on
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area fraction range
    flip: bool = False
    rotate_deg: float = 0.0  # uniform in [-deg, deg]
    brightness: float = 0.0  # factor uniform in [1-b, 1+b]
    contrast: float = 0.0  # factor uniform in [1-c, 1+c]
    saturation: float = 0.0  # factor uniform in [1-s, 1+s] (RGB)
    hue: float = 0.0  # shift uniform in [-h, h] turns of the colour wheel (RGB)
    auto_augment: str = "none"  # none | randaugment | trivialaugment
    random_erasing: float = 0.0  # probability per image


def resolve_pipeline(cfg: DataConfig, shape: tuple[int, ...], train: bool) -> Pipeline:
    """The pipeline for a split of `shape` (N, C, H, W; H = W = 0 when sizes vary).

    Output size is `data.image_size` squared, else the stored size. Training augmentation uses
    data.flip/rotate_deg/brightness/contrast/saturation/hue (None -> the data set's default),
    data.crop_scale, data.auto_augment and data.random_erasing; `data.augment=false` or
    `train=False` turns it off. `cfg` is validated (`trainlab.config.validate`): crop_scale,
    random_erasing... in range.
    """
    scale = tuple(float(v) for v in cfg.crop_scale)
    if cfg.image_size is not None:
        size = (int(cfg.image_size), int(cfg.image_size))
    elif shape[2] > 0 and shape[3] > 0:
        size = (int(shape[2]), int(shape[3]))
    else:
        raise ConfigError("The images of this data set have different sizes; set "
                          "data.image_size (e.g. data.image_size=224) so that each one is "
                          "resized and cropped to one size.")
    aug = resolve_augment(cfg)  # checks the ranges and fills in the data set's defaults
    if not (train and cfg.augment):
        return Pipeline(size=size, random=False, crop_scale=scale)
    return Pipeline(size=size, random=True, crop_scale=scale, flip=aug.flip,
                    rotate_deg=aug.rotate_deg, brightness=aug.brightness,
                    contrast=aug.contrast, saturation=aug.saturation, hue=aug.hue,
                    auto_augment=cfg.auto_augment,
                    random_erasing=float(cfg.random_erasing))


def build_transform(p: Pipeline, stored: tuple[int, int] | None
                    ) -> Callable[[Tensor], Tensor] | None:
    """torchvision v2 transform uint8 [C, h, w] -> uint8 [C, *p.size]; None when nothing to do.

    `stored`: the (H, W) every image has, or None when sizes vary.
    """
    from torchvision.transforms import InterpolationMode, v2  # 1 s to import: only when used

    h, w = p.size
    if not p.random:
        if stored == p.size:
            return None
        return v2.Compose([v2.Resize(min(h, w), antialias=True), v2.CenterCrop(p.size)])
    ops: list[Callable] = [v2.RandomResizedCrop(p.size, scale=p.crop_scale, antialias=True)]
    if p.flip:
        ops.append(v2.RandomHorizontalFlip())
    if p.rotate_deg > 0:
        ops.append(v2.RandomRotation(p.rotate_deg, interpolation=InterpolationMode.BILINEAR))
    if p.brightness > 0 or p.contrast > 0 or p.saturation > 0 or p.hue > 0:
        ops.append(v2.ColorJitter(brightness=p.brightness or None, contrast=p.contrast or None,
                                  saturation=p.saturation or None, hue=p.hue or None))
    if p.auto_augment == "randaugment":
        ops.append(v2.RandAugment())
    elif p.auto_augment == "trivialaugment":
        ops.append(v2.TrivialAugmentWide())
    return v2.Compose(ops)


def erase_box(height: int, width: int, prob: float) -> Tensor:
    """RandomErasing's box as torchvision draws it (area 2-33%, aspect 0.3-3.3), from the global
    torch RNG: int64 [4] = (top, left, h, w) pixels; h = w = 0 when nothing is erased."""
    if prob <= 0 or torch.rand(1).item() >= prob:
        return torch.zeros(4, dtype=torch.int64)
    log_ratio = (math.log(0.3), math.log(3.3))
    for _ in range(10):
        area = height * width * torch.empty(1).uniform_(0.02, 0.33).item()
        aspect = math.exp(torch.empty(1).uniform_(*log_ratio).item())
        eh, ew = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < eh < height and 0 < ew < width:
            top = int(torch.randint(0, height - eh + 1, (1,)))
            left = int(torch.randint(0, width - ew + 1, (1,)))
            return torch.tensor([top, left, eh, ew], dtype=torch.int64)
    return torch.zeros(4, dtype=torch.int64)


def erase(x: Tensor, boxes: Tensor) -> Tensor:
    """Set each image's box to 0: x float [B, C, H, W], boxes int64 [B, 4] (top, left, h, w)."""
    height, width = x.shape[-2:]
    top, left, eh, ew = boxes.to(x.device).unbind(1)  # [B] each
    rows = torch.arange(height, device=x.device)[None]  # [1, H]
    cols = torch.arange(width, device=x.device)[None]  # [1, W]
    in_r = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # [B, H]
    in_c = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # [B, W]
    return x.masked_fill(in_r[:, None, :, None] & in_c[:, None, None, :], 0.0)


class _Samples(Dataset):
    """Map-style data set keyed by (index, epoch, position): -> (uint8 [C, H, W], label, box)."""

    def __init__(self, x: Tensor | ImageFiles, y: Tensor, transform: Callable | None,
                 pipeline: Pipeline | None, seed: int) -> None:
        self.x, self.y, self.transform, self.seed = x, y, transform, seed
        self.size = pipeline.size if pipeline is not None else None
        self.random = pipeline is not None and pipeline.random
        self.erasing = pipeline.random_erasing if self.random else 0.0

    def __len__(self) -> int:
        return len(self.y)

    def _read(self, index: int) -> Tensor:
        img = self.x[index] if isinstance(self.x, Tensor) else self.x.read(index)
        if img.dtype != torch.uint8 or img.ndim != 3:
            raise ValueError(f"image {index} is {img.dtype} {tuple(img.shape)}; the file-backed "
                             f"loader needs uint8 [C, H, W]")
        return img

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[Tensor, int, Tensor]:
        index, epoch, position = key
        img = self._read(index)
        box = torch.zeros(4, dtype=torch.int64)
        if self.random:  # seeded per sample; the caller's CPU RNG state is left as it was
            rng = torch.default_generator  # what v2 transforms draw from (torch.manual_seed
            state = rng.get_state()  # would also seed CUDA: ~1 ms a call)
            try:
                rng.manual_seed(sample_seed(self.seed, epoch, position))
                img = self.transform(img) if self.transform is not None else img
                box = erase_box(img.shape[1], img.shape[2], self.erasing)
            finally:
                rng.set_state(state)
        elif self.transform is not None:
            img = self.transform(img)
        return img, int(self.y[index]), box


def _collate(items: list[tuple[Tensor, int, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    imgs, labels, boxes = zip(*items, strict=True)
    return torch.stack(imgs), torch.tensor(labels, dtype=torch.int64), torch.stack(boxes)


class _EpochBatches:
    """Batch sampler: this rank's keys (index, epoch, position) of batches `start`.. of `epoch`.

    The loader sets `epoch` and `start` before each pass; the sampler runs in the main process.
    """

    def __init__(self, n: int, num_batches: int, shuffle: bool, seed: int,
                 rank_slice: Callable[[int], tuple[int, int]]) -> None:
        self.n, self.num_batches = n, num_batches
        self.shuffle, self.seed = shuffle, seed
        self.rank_slice = rank_slice  # batch i -> this rank's positions [lo, hi)
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        n, epoch = self.n, self.epoch
        order = (torch.randperm(n, generator=epoch_generator(self.seed, epoch)) if self.shuffle
                 else torch.arange(n)).tolist()
        for i in range(self.start, self.num_batches):
            lo, hi = self.rank_slice(i)
            yield [(order[p], epoch, p) for p in range(lo, hi)]


class FileLoader(BatchesBase):
    """Batches decoded and augmented by DataLoader workers; same interface as `DeviceLoader`.

    x: `ImageFiles` or uint8 tensor [N, C, H, W] (kept on the CPU), y: int64 [N]. Yields (images
    float32 [B, C, H, W] on `device`, normalized with `mean`/`std` per channel in [0, 1] pixel
    units, labels int64 [B] on `device`; with `mix`, soft labels float32 [B, K]; the samples'
    `SampleKeys`).
    `pipeline=None` means no per-sample transform (all images must have one size).
    """

    def __init__(
        self,
        x: Tensor | ImageFiles,
        y: Tensor,
        batch_size: int,
        mean: list[float],
        std: list[float],
        *,
        shuffle: bool,
        pipeline: Pipeline | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        num_workers: int | None = None,
        mix: MixSpec | None = None,
    ) -> None:
        shape = tuple(x.shape)
        if len(shape) != 4 or len(x) != len(y):
            raise ValueError(f"FileLoader needs images [N, C, H, W] and labels [N], got "
                             f"{shape} and {tuple(y.shape)}")
        stored = (int(shape[2]), int(shape[3])) if shape[2] > 0 and shape[3] > 0 else None
        if pipeline is None and stored is None:
            raise ConfigError("The images of this data set have different sizes; set "
                              "data.image_size (e.g. data.image_size=224).")
        workers = default_num_workers() if num_workers is None else num_workers
        self.x = x.cpu() if isinstance(x, Tensor) else x
        self.y = y.cpu()
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.pipeline, self.mix, self.num_workers = pipeline, mix, workers
        self.erasing = pipeline is not None and pipeline.random and pipeline.random_erasing > 0
        transform = build_transform(pipeline, stored) if pipeline is not None else None
        self.samples = _Samples(self.x, self.y, transform, pipeline, seed)
        self.batches = _EpochBatches(len(self.y), len(self), shuffle, seed, self.rank_slice)
        self._set_stats(mean, std, shape[1], self.device)
        self._loader: DataLoader | None = None  # built on first use (workers start then)

    def _data_loader(self) -> DataLoader:
        if self._loader is None:
            workers = self.num_workers
            self._loader = DataLoader(
                self.samples, batch_sampler=self.batches, num_workers=workers,
                collate_fn=_collate, pin_memory=self.device.type == "cuda",
                persistent_workers=workers > 0,
                generator=torch.Generator().manual_seed(self.seed),  # keep global RNG untouched
            )
        return self._loader

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor, SampleKeys]]:
        """Yield batches `start`, `start+1`, ... of `epoch` (this rank's share of each batch)."""
        if start >= len(self):
            return
        self.batches.epoch, self.batches.start = epoch, start
        for i, (img, yb, boxes) in enumerate(self._data_loader(), start):
            xb = self.normalize(img.to(self.device, non_blocking=True))
            yb = yb.to(self.device, non_blocking=True)
            if self.erasing:
                xb = erase(xb, boxes)
            if self.mix is not None:
                xb, yb = mix_batch(xb, yb, self.mix, mix_generator(self.seed, epoch, i))
            keys = contiguous_keys(self.seed, epoch, *self.rank_slice(i))
            yield grey_as_channels_last(xb), yb, keys

"""In-memory loader: uint8 images on the device, one gather + a few tensor ops per batch.

The order and the augmentation parameters of an epoch are pure functions of (seed, epoch):
both are drawn at the start of the epoch for every position of the epoch, from a generator
seeded with (seed, epoch). Batch `i` is positions [i*B, (i+1)*B) of that order, so resuming at
batch `i` reproduces the rest of the epoch exactly, and a rank that takes a slice of those
positions sees the same samples with the same augmentation as a single process would.
Optional Mixup/CutMix (`mix`) is applied per batch from `mix_generator(seed, epoch, batch)`.
Each batch also carries its samples' `SampleKeys` (seed, epoch, positions), from which methods
draw their own per-sample randomness (see trainlab.data.keys).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from trainlab.data.augment import AugmentSpec, apply_augment, sample_params
from trainlab.data.keys import SampleKeys, contiguous_keys
from trainlab.data.mix import MixSpec, mix_batch, mix_generator


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """CPU generator for one epoch's order and augmentation; independent of global RNG state."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1))


class BatchesBase:
    """What both loaders share: batch count, normalization on the device."""

    y: Tensor
    batch_size: int
    shuffle: bool
    rank: int
    world_size: int

    def _set_stats(self, mean: list[float], std: list[float], channels: int,
                   device: torch.device) -> None:
        """Per-channel mean/std in [0, 1] pixel units, shaped [1, C, 1, 1] on `device`."""
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, channels, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, channels, 1, 1)

    def __len__(self) -> int:
        """Batches per epoch. Training drops the last partial batch (unless it is the only one)."""
        n = len(self.y)
        if n == 0:
            return 0
        if self.shuffle:
            return max(1, n // self.batch_size)
        return -(-n // self.batch_size)

    def rank_slice(self, i: int) -> tuple[int, int]:
        """Positions [lo, hi) of batch `i` that this rank holds: a contiguous share of the
        global batch [i*B, (i+1)*B) (ceil(B / world_size) each; the last ranks may get less)."""
        lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, len(self.y))
        per = -(-(hi - lo) // self.world_size)
        return lo + self.rank * per, min(hi, lo + (self.rank + 1) * per)

    def normalize(self, x_u8: Tensor) -> Tensor:
        """uint8 [B, C, H, W] -> float32 normalized [B, C, H, W]."""
        return (x_u8.float().div_(255.0) - self.mean) / self.std


def grey_as_channels_last(x: Tensor) -> Tensor:
    """A one-channel batch [B, 1, H, W] with channels_last strides (H*W, 1, W, 1); no copy:
    with one channel both layouts are the same memory. Which path a CPU convolution takes
    follows these strides, and the channels_last one costs less: 27% less CPU time per step of
    the default `cnn` on Fashion-MNIST (benchmarks/RESULTS.md, "loop overhead"). Augmented
    and plain batches came out of the loader with different strides before, so the same model
    trained 27% slower on augmented batches. Other batches are returned as they are
    (`train.channels_last` converts them)."""
    if x.dim() == 4 and x.shape[1] == 1 and x.is_contiguous():
        _, _, h, w = x.shape
        return x.as_strided(x.shape, (h * w, 1, w, 1))
    return x


class DeviceLoader(BatchesBase):
    """Batches from a data set held on `x.device` as uint8.

    x: [N, C, H, W] uint8 (0..255), y: [N] int64. Yields (images [B, C, H, W] float32,
    normalized with `mean`/`std` given per channel in [0, 1] pixel units, labels [B] int64,
    `SampleKeys` of the B samples). With `mix` (training only) labels are soft instead:
    float32 [B, K], rows summing to 1.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        mean: list[float],
        std: list[float],
        *,
        shuffle: bool,
        augment: AugmentSpec | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        mix: MixSpec | None = None,
    ) -> None:
        self.x, self.y = x, y
        self.mix = mix
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment if augment is not None and augment.enabled else None
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self._set_stats(mean, std, x.shape[1], x.device)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor, SampleKeys]]:
        """Yield batches `start`, `start+1`, ... of `epoch` (this rank's share of each batch)."""
        n = len(self.y)
        order: Tensor | None = None
        params: Tensor | None = None
        if self.shuffle or self.augment is not None:
            g = epoch_generator(self.seed, epoch)
            if self.shuffle:
                order = torch.randperm(n, generator=g)
            if self.augment is not None:
                params = sample_params(self.augment, n, g)
            if order is not None:
                order = order.to(self.x.device)
            if params is not None:
                params = params.to(self.x.device)
        for i in range(start, len(self)):
            lo, hi = self.rank_slice(i)
            idx = order[lo:hi] if order is not None else slice(lo, hi)
            xb, yb = self.x[idx], self.y[idx]
            if params is not None:
                xf = apply_augment(xb.float().div_(255.0), params[lo:hi], self.augment)
                xb = (xf - self.mean) / self.std
            else:
                xb = self.normalize(xb)
            if self.mix is not None:
                xb, yb = mix_batch(xb, yb, self.mix, mix_generator(self.seed, epoch, i))
            yield grey_as_channels_last(xb), yb, contiguous_keys(self.seed, epoch, lo, hi)

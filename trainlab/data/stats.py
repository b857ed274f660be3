"""Per-channel normalization statistics of a uint8 image set (in memory or file-backed)."""

from __future__ import annotations

import math

import numpy as np
import torch

from trainlab.data.cache import thread_map
from trainlab.data.sources.base import ImageFiles

FILE_SAMPLE = 5000  # images read to estimate the stats of a file-backed set
FILE_SAMPLE_SEED = 0


def channel_stats(
    x_uint8: torch.Tensor | ImageFiles, chunk: int = 4096
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of x_uint8: uint8 [N, C, H, W] (0..255), in [0, 1] pixel units.

    Sums of values and of squares are accumulated per chunk of `chunk` images in int64, so the
    result is exact up to the final float64 division and memory stays at one chunk. std is the
    population std (ddof 0) over all N*H*W pixels of a channel; a constant channel gets std 1.0
    so that normalizing by it stays finite. Returns (mean [C], std [C]) as Python floats.

    For file-backed `ImageFiles` the stats are estimated from a fixed sample: at most
    FILE_SAMPLE (5,000) images drawn without replacement with a generator seeded by
    FILE_SAMPLE_SEED, so every run of the same data gets the same numbers; images of different
    sizes are fine (each pixel counts once). With <= 5,000 images the result is exact.
    """
    if isinstance(x_uint8, ImageFiles):
        return _file_stats(x_uint8)
    if x_uint8.dtype != torch.uint8 or x_uint8.ndim != 4:
        raise ValueError(f"channel_stats needs uint8 [N, C, H, W], got {x_uint8.dtype} "
                         f"{tuple(x_uint8.shape)}")
    n, channels, height, width = x_uint8.shape
    count = n * height * width  # pixels per channel
    if count == 0:
        raise ValueError("channel_stats needs at least one pixel, got an empty image set")
    total = torch.zeros(channels, dtype=torch.int64, device=x_uint8.device)
    total_sq = torch.zeros(channels, dtype=torch.int64, device=x_uint8.device)
    for start in range(0, n, chunk):
        part = x_uint8[start:start + chunk].to(torch.int64)  # [n_chunk, C, H, W]
        total += part.sum(dim=(0, 2, 3))
        total_sq += (part * part).sum(dim=(0, 2, 3))
    return _finish(total.tolist(), total_sq.tolist(), count)


def _file_stats(files: ImageFiles) -> tuple[list[float], list[float]]:
    """Exact stats of a seeded sample of at most FILE_SAMPLE images of `files`."""
    n = len(files)
    if n == 0:
        raise ValueError("channel_stats needs at least one pixel, got an empty image set")
    rng = np.random.default_rng(FILE_SAMPLE_SEED)
    sample = np.sort(rng.choice(n, size=min(n, FILE_SAMPLE), replace=False))

    def sums(i: np.int64) -> tuple[list[int], list[int], int]:
        img = files.read(int(i)).to(torch.int64)  # [C, H, W]
        return img.sum(dim=(1, 2)).tolist(), (img * img).sum(dim=(1, 2)).tolist(), img[0].numel()

    channels = int(files.shape[1])
    total, total_sq, count = [0] * channels, [0] * channels, 0
    for s, q, c in thread_map(sums, list(sample)):
        total = [a + b for a, b in zip(total, s, strict=True)]
        total_sq = [a + b for a, b in zip(total_sq, q, strict=True)]
        count += c
    if count == 0:
        raise ValueError("channel_stats needs at least one pixel, got only empty images")
    return _finish(total, total_sq, count)


def _finish(total: list[int], total_sq: list[int], count: int) -> tuple[list[float], list[float]]:
    """Per-channel sums of values and squares over `count` pixels -> (mean [C], std [C])."""
    means, stds = [], []
    for s, q in zip(total, total_sq, strict=True):
        var_num = count * q - s * s  # exact Python ints: count^2 * 255^2 * var
        means.append(s / (count * 255))
        stds.append(math.sqrt(var_num) / (count * 255) if var_num > 0 else 1.0)
    return means, stds

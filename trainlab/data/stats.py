"""Per-channel normalization statistics of a uint8 image set."""

from __future__ import annotations

import math

import torch


def channel_stats(x_uint8: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of x_uint8: uint8 [N, C, H, W] (0..255), in [0, 1] pixel units.

    Sums of values and of squares are accumulated per chunk of `chunk` images in int64, so the
    result is exact up to the final float64 division and memory stays at one chunk. std is the
    population std (ddof 0) over all N*H*W pixels of a channel; a constant channel gets std 1.0
    so that normalizing by it stays finite. Returns (mean [C], std [C]) as Python floats.
    """
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
    means, stds = [], []
    for s, q in zip(total.tolist(), total_sq.tolist(), strict=True):
        var_num = count * q - s * s  # exact Python ints: count^2 * 255^2 * var
        means.append(s / (count * 255))
        stds.append(math.sqrt(var_num) / (count * 255) if var_num > 0 else 1.0)
    return means, stds

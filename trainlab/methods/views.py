"""On-device view augmentation for SimCLR and DINO, a few tensor ops per batch.

Each view of each image gets its own random parameters, made from 7 uniform numbers per view
(`view_params`): SimCLR passes per-sample numbers from the batch's keys (trainlab.data.keys), so
a sample's views follow the sample, not the rank; without them they are drawn from torch's global
RNG on the batch's device, or from a given CPU generator. A view is:

1. random resized crop + horizontal flip, fused into one affine grid + bilinear `grid_sample`:
   a box of `scale` x the image area and aspect ratio in `ratio` (log-uniform), anywhere inside
   the image, resized back to H x W (or to a given smaller size: DINO's local crops);
2. brightness / contrast jitter on the normalized image: contrast scales the deviation from the
   image's mean by a factor in [1 - c, 1 + c], brightness adds an offset in [-b, b] (normalized
   units, i.e. data standard deviations). No clamping: normalized images have no fixed range.

Params columns (float32 [B, 7]), see `VIEW_COLUMNS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainlab.data.augment import affine_grid

VIEW_COLUMNS = ("area", "log_ratio", "cx", "cy", "flip", "brightness", "contrast")


@dataclass(frozen=True)
class ViewSpec:
    """Strength of the view augmentation (units in the field comments)."""

    scale: tuple[float, float] = (0.2, 1.0)  # crop area, fraction of the image area
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio width / height
    flip: float = 0.5  # probability of a horizontal flip
    brightness: float = 0.4  # additive offset uniform in [-b, b], normalized units
    contrast: float = 0.4  # factor uniform in [1 - c, 1 + c] around the image mean


def sample_view_params(spec: ViewSpec, n: int, device: torch.device,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image view params: float32 [n, 7] on `device` (columns: VIEW_COLUMNS).

    Without `generator` the draw comes from torch's global RNG on `device`; with one (a CPU
    generator) it is drawn on the CPU and moved.
    """
    if generator is None:
        u = torch.rand(n, len(VIEW_COLUMNS), device=device)
    else:
        u = torch.rand(n, len(VIEW_COLUMNS), generator=generator).to(device)
    return view_params(spec, u)


def view_params(spec: ViewSpec, u: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) numbers u [n, 7] -> view params float32 [n, 7] (columns: VIEW_COLUMNS)."""
    lo, hi = spec.scale
    area = lo + (hi - lo) * u[:, 0]
    log_lo, log_hi = math.log(spec.ratio[0]), math.log(spec.ratio[1])
    log_ratio = log_lo + (log_hi - log_lo) * u[:, 1]
    flip = (u[:, 4] < spec.flip).float()
    bright = (2 * u[:, 5] - 1) * spec.brightness
    contrast = 1 + (2 * u[:, 6] - 1) * spec.contrast
    return torch.stack([area, log_ratio, 2 * u[:, 2] - 1, 2 * u[:, 3] - 1, flip, bright,
                        contrast], dim=1)


def apply_view(x: torch.Tensor, params: torch.Tensor,
               out_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """One view per image: x float [B, C, H, W] (normalized), params [B, 7] -> [B, C, h, w],
    (h, w) = `out_hw` (the crop resized to it; DINO's small local crops), default (H, W)."""
    batch = x.shape[0]
    height, width = out_hw or x.shape[-2:]
    area, log_ratio, cx, cy, flip, bright, contrast = params.float().unbind(1)  # 7 x [B]
    ratio = log_ratio.exp()
    w = (area * ratio).sqrt().clamp(max=1.0)  # box width, fraction of the image width
    h = (area / ratio).sqrt().clamp(max=1.0)  # box height, fraction of the image height
    f = 1 - 2 * flip  # -1 flips x
    zero = torch.zeros_like(w)
    # output -> input map in normalized coordinates: x_in = w * f * x_out + centre_x, ...
    row0 = torch.stack([w * f, zero, cx * (1 - w)], dim=1)  # the box stays inside the image
    row1 = torch.stack([zero, h, cy * (1 - h)], dim=1)
    theta = torch.stack([row0, row1], dim=1)  # [B, 2, 3]
    grid = affine_grid(theta, height, width).to(x.dtype)  # [B, h, w, 2]
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1]
    c = contrast.to(x.dtype).view(batch, 1, 1, 1)
    return (x - mean) * c + mean + bright.to(x.dtype).view(batch, 1, 1, 1)


def two_views(x: torch.Tensor, spec: ViewSpec, generator: torch.Generator | None = None,
              uniform: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of x [B, C, H, W] -> ([B, C, H, W], [B, C, H, W]).

    `uniform` [B, 14] (uniform [0, 1) numbers; columns 0-6 make view 1, 7-13 view 2) fixes the
    views; without it they are drawn as `sample_view_params` does.
    """
    if uniform is not None:
        n = len(VIEW_COLUMNS)
        if uniform.shape != (x.shape[0], 2 * n):
            raise ValueError(f"uniform must be [{x.shape[0]}, {2 * n}], got {tuple(uniform.shape)}")
        u = uniform.to(x.device)
        p1, p2 = view_params(spec, u[:, :n]), view_params(spec, u[:, n:])
        return apply_view(x, p1), apply_view(x, p2)
    p1 = sample_view_params(spec, x.shape[0], x.device, generator)
    p2 = sample_view_params(spec, x.shape[0], x.device, generator)
    return apply_view(x, p1), apply_view(x, p2)

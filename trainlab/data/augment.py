"""On-device batched training augmentation: a few tensor ops per batch, no per-sample Python.

Random parameters for a whole epoch are drawn at once on the CPU (`sample_params`, from a
generator the caller seeds with (seed, epoch)), indexed per batch, moved to the batch's device
and applied by `apply_augment`:

1. geometry, fused into one affine grid + `F.grid_sample`: random crop after zero padding (an
   integer translation with black fill, like torchvision `RandomCrop(padding=p)`), horizontal
   flip and rotation about the image centre;
2. photometric, per image: brightness multiplies, contrast blends towards the image's mean grey;
   then, for RGB images only, saturation blends each pixel towards its own grey (luma) value and
   hue rotates the colour wheel (RGB -> HSV, shift H, back); values are clamped to [0, 1] after
   each op, in this order (as torchvision's ColorJitter with a fixed order).

Params columns (float32 [N, 8]), see `PARAM_COLUMNS`:
  0 dx_px      horizontal crop offset, integer pixels in [-pad, pad] (out[i, j] = in[i+dy, j+dx])
  1 dy_px      vertical crop offset, integer pixels in [-pad, pad]
  2 flip       1.0 = flip horizontally, 0.0 = keep
  3 angle_deg  rotation, degrees, uniform in [-rotate_deg, rotate_deg]; +90 turns the image
               counter-clockwise as displayed, like torch.rot90(x, 1, dims=(2, 3))
  4 brightness factor, uniform in [1 - b, 1 + b]
  5 contrast   factor, uniform in [1 - c, 1 + c]
  6 saturation factor, uniform in [1 - s, 1 + s] (0 = grey, 1 = unchanged)
  7 hue        shift in turns of the colour wheel, uniform in [-h, h] (1/3: red -> green)
An op that is off gets its neutral value (0, 0, 0, 0, 1, 1, 1, 0). Columns 0-5 come from one
draw and 6-7 from a second one after it, so adding the colour columns left the first six (and
every run without colour jitter) exactly as they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainlab.config.schema import DataConfig
from trainlab.data.sources import augment_defaults

PARAM_COLUMNS = ("dx_px", "dy_px", "flip", "angle_deg", "brightness", "contrast", "saturation",
                 "hue")
NEUTRAL_PARAMS = (0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0)
_FIRST_DRAW = 6  # columns drawn by the first torch.rand call (the geometric + grey ones)
_GREY_RGB = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights, as torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class AugmentSpec:
    """Which training augmentations are on and how strong (units in the field comments)."""

    crop_padding: int  # pixels of zero padding before the random crop; 0 -> off
    flip: bool  # random horizontal flip with probability 1/2
    rotate_deg: float  # rotation angle uniform in [-rotate_deg, rotate_deg] degrees; 0 -> off
    brightness: float  # brightness factor uniform in [1 - b, 1 + b]; 0 -> off
    contrast: float  # contrast factor uniform in [1 - c, 1 + c]; 0 -> off
    saturation: float = 0.0  # RGB: saturation factor uniform in [1 - s, 1 + s]; 0 -> off
    hue: float = 0.0  # RGB: hue shift uniform in [-h, h] turns, h <= 0.5; 0 -> off

    @property
    def geometric(self) -> bool:
        """True if any of crop, flip, rotation is on (needs the grid_sample pass)."""
        return self.crop_padding > 0 or self.flip or self.rotate_deg > 0

    @property
    def colour(self) -> bool:
        """True if saturation or hue is on (RGB images only)."""
        return self.saturation > 0 or self.hue > 0

    @property
    def photometric(self) -> bool:
        """True if brightness, contrast, saturation or hue is on."""
        return self.brightness > 0 or self.contrast > 0 or self.colour

    @property
    def enabled(self) -> bool:
        """True if any augmentation is on."""
        return self.geometric or self.photometric


def resolve_augment(cfg: DataConfig) -> AugmentSpec:
    """The augmentation to use: `cfg` values, None -> the data set's default (`augment_defaults`).

    `cfg.augment=False` turns everything off. `cfg` is validated (`trainlab.config.validate`):
    crop_padding >= 0, rotate_deg in [0, 180], brightness, contrast and saturation in [0, 1),
    hue in [0, 0.5]. Data sets that state no saturation/hue default get 0 (off).
    """
    defaults = {"saturation": 0.0, "hue": 0.0, **augment_defaults(cfg.name)}
    values = {k: (getattr(cfg, k) if getattr(cfg, k) is not None else d)
              for k, d in defaults.items()}
    pad = int(values["crop_padding"])
    if not cfg.augment:
        return AugmentSpec(crop_padding=0, flip=False, rotate_deg=0.0, brightness=0.0,
                           contrast=0.0)
    return AugmentSpec(
        crop_padding=pad,
        flip=bool(values["flip"]),
        rotate_deg=float(values["rotate_deg"]),
        brightness=float(values["brightness"]),
        contrast=float(values["contrast"]),
        saturation=float(values["saturation"]),
        hue=float(values["hue"]),
    )


def neutral_params(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Params that leave images unchanged: float32 [n, 8] (see PARAM_COLUMNS)."""
    return torch.tensor(NEUTRAL_PARAMS, device=device).repeat(n, 1)


def sample_params(spec: AugmentSpec, n: int, generator: torch.Generator) -> torch.Tensor:
    """Draw per-sample augmentation params: float32 [n, 8] on the CPU (columns: PARAM_COLUMNS).

    A `torch.rand(n, 6)` draw in float64 for columns 0-5, then `torch.rand(n, 2)` for the
    colour columns only when saturation or hue is on; the result depends only on (spec, n,
    generator state). Every column of a draw is drawn even when its op is off (then set to
    neutral), so sample i's crop offset does not change when, say, rotation is switched on.
    """
    u = torch.rand(n, _FIRST_DRAW, generator=generator, dtype=torch.float64)
    p = spec.crop_padding
    shift = (torch.floor(u[:, 0:2] * (2 * p + 1)) - p).clamp_(-p, p)  # integers in [-p, p]
    zeros = torch.zeros(n, dtype=torch.float64)
    flip = (u[:, 2] < 0.5).double() if spec.flip else zeros
    angle = (2 * u[:, 3] - 1) * spec.rotate_deg if spec.rotate_deg > 0 else zeros
    bright = 1 + (2 * u[:, 4] - 1) * spec.brightness
    contrast = 1 + (2 * u[:, 5] - 1) * spec.contrast
    sat, hue = torch.ones(n, dtype=torch.float64), zeros
    if spec.colour:
        v = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        sat = 1 + (2 * v[:, 0] - 1) * spec.saturation
        hue = (2 * v[:, 1] - 1) * spec.hue
    params = torch.cat([shift, flip[:, None], angle[:, None], bright[:, None],
                        contrast[:, None], sat[:, None], hue[:, None]], dim=1)
    return params.float()


def _affine_theta(params: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Output->input map as `F.affine_grid` takes it, [B, 2, 3], in normalized coordinates.

    In pixel units the sampled input position is R(angle) F(flip) u + (dx, dy) for output
    position u relative to the centre: flip, then rotate, then translate (crop).
    """
    dx, dy, flip, angle_deg = params[:, 0], params[:, 1], params[:, 2], params[:, 3]
    f = 1 - 2 * flip  # -1 flips x
    rad = angle_deg * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    aspect = height / width  # pixel -> normalized scales differ for non-square images
    row0 = torch.stack([cos * f, -sin * aspect, dx * (2 / width)], dim=1)
    row1 = torch.stack([sin * f / aspect, cos, dy * (2 / height)], dim=1)
    return torch.stack([row0, row1], dim=1)  # [B, 2, 3]


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Same grid as `F.affine_grid(theta, [B, C, H, W], align_corners=False)`: [B, H, W, 2].

    Built by broadcasting in a [B, 2, H, W] layout and returned as a permuted view (grid_sample
    takes strided grids): ~0.5 ms for 512x28x28 on one CPU thread, against ~5 ms for
    F.affine_grid's batched matmul. Equal to it within float rounding.
    """
    batch = theta.shape[0]
    kw = dict(dtype=theta.dtype, device=theta.device)
    base_x = (torch.linspace(-1, 1, width, **kw) * ((width - 1) / width)).view(1, 1, 1, width)
    base_y = (torch.linspace(-1, 1, height, **kw) * ((height - 1) / height)).view(1, 1, height, 1)
    coef = theta.reshape(batch, 2, 3, 1, 1)  # [B, out coord (x, y), (x, y, 1), 1, 1]
    grid = coef[:, :, 0] * base_x + (coef[:, :, 1] * base_y + coef[:, :, 2])  # [B, 2, H, W]
    return grid.permute(0, 2, 3, 1)


def _mean_grey(x: torch.Tensor) -> torch.Tensor:
    """Per-image mean grey level: [B, C, H, W] -> [B, 1, 1, 1] (luma weights for RGB)."""
    if x.shape[1] == 3:
        w = torch.tensor(_GREY_RGB, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    return x.mean(dim=(1, 2, 3), keepdim=True)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel luma of RGB images: [B, 3, H, W] -> [B, 1, H, W]."""
    w = torch.tensor(_GREY_RGB, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend RGB images x [B, 3, H, W] in [0, 1] with their grey version: factor [B] (0 = grey,
    1 = unchanged, 2 = twice as colourful), clamped to [0, 1] as torchvision's
    adjust_saturation."""
    f = factor.view(-1, 1, 1, 1)
    return (x * f + _grey(x) * (1 - f)).clamp_(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images x [B, 3, H, W] in [0, 1] by shift [B] turns of the colour
    wheel (HSV hue + shift, mod 1; saturation and value kept), as torchvision's adjust_hue.
    A shift of 1/3 turns pure red into pure green, green into blue, blue into red."""
    r, g, b = x.unbind(1)  # [B, H, W] each
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    h = torch.remainder(h + shift.view(-1, 1, 1), 1.0)  # [B, H, W] in [0, 1)
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)),
                    torch.zeros_like(maxc))
    v = maxc
    # HSV -> RGB: channel n takes v - v*s*clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6
    k = torch.remainder(torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype, device=x.device
                                     ).view(1, 3, 1, 1) + 6 * h[:, None], 6.0)
    ramp = torch.minimum(k, 4 - k).clamp(0, 1)
    return (v[:, None] - (v * s)[:, None] * ramp).clamp_(0, 1)


def apply_augment(
    x: torch.Tensor, params: torch.Tensor, spec: AugmentSpec | None = None
) -> torch.Tensor:
    """Augment a batch: x float [B, C, H, W] in [0, 1], params [B, 8] on x's device -> [B, C, H, W].

    Pass `spec` to decide which ops run from the config (no device sync); without it they are
    read from `params` (one small sync). Crop/flip with no rotation use nearest sampling, so
    they equal zero padding + integer crop exactly; rotation uses bilinear sampling. When no op
    is on, `x` itself is returned.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"apply_augment needs a float [B, C, H, W] batch, got {x.dtype} "
                         f"{tuple(x.shape)}")
    if params.shape != (x.shape[0], len(PARAM_COLUMNS)) or params.device != x.device:
        raise ValueError(f"params must be [{x.shape[0]}, {len(PARAM_COLUMNS)}] on {x.device}, "
                         f"got {tuple(params.shape)} on {params.device}")
    if spec is not None:
        geometric, rotate = spec.geometric, spec.rotate_deg > 0
        bright, contrast = spec.brightness > 0, spec.contrast > 0
        saturate, hue = spec.saturation > 0, spec.hue > 0
    else:
        neutral = torch.tensor(NEUTRAL_PARAMS, device=params.device)
        active = (params != neutral).any(dim=0).tolist()  # one sync for all eight columns
        geometric, rotate = any(active[:4]), active[3]
        bright, contrast, saturate, hue = active[4:8]
    if x.shape[1] != 3:  # saturation and hue have no meaning for grey images
        saturate = hue = False
    batch, _, height, width = x.shape
    if geometric:  # the grid is computed in float32 even for half-precision batches
        theta = _affine_theta(params.float(), height, width)
        grid = affine_grid(theta, height, width).to(x.dtype)  # [B, H, W, 2]
        x = F.grid_sample(x, grid, mode="bilinear" if rotate else "nearest",
                          padding_mode="zeros", align_corners=False)
    factors = params[:, 4:6].to(x.dtype)  # [B, 2]: brightness, contrast
    if bright:
        x = (x * factors[:, 0].view(batch, 1, 1, 1)).clamp_(0, 1)
    if contrast:
        c = factors[:, 1].view(batch, 1, 1, 1)
        x = (x * c + _mean_grey(x) * (1 - c)).clamp_(0, 1)  # c == 1 leaves x exactly unchanged
    if saturate:
        x = adjust_saturation(x, params[:, 6].to(x.dtype))
    if hue:
        x = adjust_hue(x, params[:, 7].to(x.dtype))
    return x

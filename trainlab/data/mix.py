"""Mixup and CutMix at batch level, with soft labels; used by both loaders on training batches.

A batch is mixed with its own reverse (`x.flip(0)`, as timm does): image i is blended with image
B-1-i. Mixup blends whole images, `lam * x + (1 - lam) * x.flip(0)`; CutMix pastes one box of the
reversed batch into every image and sets `lam` to the fraction of pixels that were kept. Labels
become `lam * onehot(y) + (1 - lam) * onehot(y.flip(0))`, float32 [B, K].

Every random number of batch `i` of epoch `e` comes from `mix_generator(seed, e, i)`, so a run
resumed mid-epoch mixes the remaining batches exactly as an uninterrupted run would. With
several processes each rank mixes its own slice of the batch (same lambda and box on every rank,
partners within the slice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from trainlab.config.schema import DataConfig
from trainlab.errors import ConfigError


@dataclass(frozen=True)
class MixSpec:
    """Batch mixing settings (see `resolve_mix`); alphas are Beta(alpha, alpha) shapes, 0 = off."""

    mixup_alpha: float
    cutmix_alpha: float
    prob: float  # probability that a batch is mixed at all
    switch_prob: float  # with both on: probability of CutMix instead of Mixup
    num_classes: int  # K, the width of the soft labels


def resolve_mix(cfg: DataConfig, num_classes: int) -> MixSpec | None:
    """The mixing to apply to training batches, or None when off.

    Off when both `data.mixup_alpha` and `data.cutmix_alpha` are 0 or `data.augment=false`.
    `cfg` is validated (`trainlab.config.validate`): alphas >= 0, mix_prob and mix_switch_prob
    in [0, 1].
    """
    if not cfg.augment or (cfg.mixup_alpha == 0 and cfg.cutmix_alpha == 0):
        return None
    if num_classes < 2:
        raise ConfigError(f"data.mixup_alpha/data.cutmix_alpha need at least 2 classes; this "
                          f"data set has {num_classes}. Set both to 0.")
    return MixSpec(float(cfg.mixup_alpha), float(cfg.cutmix_alpha), float(cfg.mix_prob),
                   float(cfg.mix_switch_prob), int(num_classes))


def mix_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """CPU generator for the mixing of batch `batch` of `epoch`; independent of global RNG."""
    key = ((seed * 1_000_003 + epoch) * 1_000_033 + batch) * 7_919 + 101
    return torch.Generator().manual_seed(key % (2**63 - 1))


def _beta(alpha: float, seed: int) -> float:
    """One draw of Beta(alpha, alpha), reproducible from `seed`."""
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def cutmix_box(lam: float, height: int, width: int, u_y: float, u_x: float
               ) -> tuple[int, int, int, int]:
    """Box (y0, y1, x0, x1), pixels, of area ~ (1 - lam) * H * W, its centre at (u_y*H, u_x*W).

    u_y, u_x are uniform in [0, 1). The box is clipped to the image (as in timm), so its actual
    area can be smaller; callers recompute lambda from it.
    """
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = min(int(u_y * height), height - 1), min(int(u_x * width), width - 1)
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, width)
    return y0, y1, x0, x1


def mix_batch(x: Tensor, y: Tensor, spec: MixSpec, generator: torch.Generator
              ) -> tuple[Tensor, Tensor]:
    """Mix a batch with its reverse: x float [B, C, H, W], y int64 [B] class ids.

    Returns (x_mixed [B, C, H, W], y_soft float32 [B, K] on x's device; rows sum to 1). With
    probability 1 - spec.prob the batch is returned unchanged with one-hot labels. The same five
    numbers are drawn from `generator` whatever happens, so later draws never shift.
    """
    u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    beta_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    onehot = F.one_hot(y, spec.num_classes).float()  # [B, K]
    use_mixup, use_cutmix = spec.mixup_alpha > 0, spec.cutmix_alpha > 0
    if u[0] >= spec.prob or not (use_mixup or use_cutmix):
        return x, onehot
    cutmix = use_cutmix and (not use_mixup or u[1] < spec.switch_prob)
    lam = _beta(spec.cutmix_alpha if cutmix else spec.mixup_alpha, beta_seed)
    partner = x.flip(0)
    if cutmix:
        height, width = x.shape[-2:]
        y0, y1, x0, x1 = cutmix_box(lam, height, width, u[2], u[3])
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = partner[:, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    else:
        x = x * lam + partner * (1.0 - lam)
    return x, onehot * lam + onehot.flip(0) * (1.0 - lam)

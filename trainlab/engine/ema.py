"""Exponential moving average of a model's weights (evaluated and checkpointed beside them)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """ema = d * ema + (1 - d) * weights, after every optimizer step.

    Every floating-point entry of the state dict is averaged (parameters and BatchNorm running
    statistics, as timm's ModelEmaV2 does); integer buffers (num_batches_tracked) are copied.
    With the optimizer step t given (0-based), d = min(decay, (1 + t) / (10 + t)): a warmup, so
    the average does not drag the random initial weights along for the first ~1/(1 - decay)
    steps (decay 0.999 would otherwise still hold 43% of the initial weights after 842 steps).
    d depends on t only, so a resumed run averages exactly as an uninterrupted one.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int | None) -> float:
        """The decay used after optimizer step `step` (None: the constant `decay`)."""
        return self.decay if step is None else min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """Average `model` into the EMA after optimizer step `step` (see the class)."""
        d = self.decay_at(step)
        own = self.module.state_dict()
        avg, new = [], []
        for k, v in model.state_dict().items():
            e = own[k]
            if e.is_floating_point():
                avg.append(e)
                new.append(v.detach().to(e.dtype))
            else:
                e.copy_(v)
        if avg:  # one fused pass: ema*d + v*(1-d)
            torch._foreach_mul_(avg, d)
            torch._foreach_add_(avg, new, alpha=1.0 - d)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.module.load_state_dict(sd)

"""Exponential moving average of a model's weights (evaluated and checkpointed beside them)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """ema = decay * ema + (1 - decay) * weights, after every optimizer step.

    Every floating-point entry of the state dict is averaged (parameters and BatchNorm running
    statistics, as timm's ModelEmaV2 does); integer buffers (num_batches_tracked) are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        own = self.module.state_dict()
        for k, v in model.state_dict().items():
            e = own[k]
            if e.is_floating_point():
                e.mul_(self.decay).add_(v.detach().to(e.dtype), alpha=1.0 - self.decay)
            else:
                e.copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.module.load_state_dict(sd)

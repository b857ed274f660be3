"""A plain multi-layer perceptron on flattened pixels (the "ANN" baseline)."""

from __future__ import annotations

import torch
from torch import nn

from trainlab.config.schema import ModelConfig
from trainlab.models.norm import norm1d, resolve_norm
from trainlab.models.registry import ImageSpec, register


class MLP(nn.Module):
    """flatten -> [Linear, norm, GELU, Dropout] per hidden size -> head Linear.

    `norm` (see trainlab.models.norm): none (the default, no layer), batch, layer or group.
    """

    def __init__(self, in_features: int, hidden: list[int], num_classes: int, dropout: float = 0.0,
                 norm: str = "none"):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            normalize = [] if norm == "none" else [norm1d(norm, size)]
            layers += [nn.Linear(width, size), *normalize, nn.GELU(), nn.Dropout(dropout)]
            width = size
        self.body = nn.Sequential(nn.Flatten(), *layers)
        self.num_features = width
        self.head = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, num_features] (last hidden layer; the pixels if no hidden)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> logits [B, num_classes]."""
        return self.head(self.forward_features(x))

    def no_weight_decay(self) -> set[str]:
        """No parameters beyond biases need exempting."""
        return set()


@register("mlp", "mlp", "MLP on flattened pixels; model.hidden sets the layer sizes")
def mlp(cfg: ModelConfig, spec: ImageSpec) -> MLP:
    """Build an `MLP` for `spec` images with `cfg.hidden` layer sizes, `cfg.dropout` and
    `cfg.norm` (null = none)."""
    in_features = spec.channels * spec.height * spec.width
    return MLP(in_features, list(cfg.hidden), spec.num_classes, cfg.dropout,
               resolve_norm(cfg.norm, "mlp"))

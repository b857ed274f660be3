"""torchvision ResNets (random init, never downloaded) with a stem chosen by image size."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import torch
from torch import nn

from trainlab.config.schema import ModelConfig
from trainlab.models.norm import norm2d, resolve_norm
from trainlab.models.registry import ImageSpec, register

if TYPE_CHECKING:
    import torchvision

SMALL_IMAGE_MAX = 64  # images up to this side (pixels) get the 3x3 stride-1 stem, no max-pool


class ResNet(nn.Module):
    """A torchvision ResNet body (fc removed) -> dropout -> our own `head` Linear.

    Images with max(H, W) <= 64 use a CIFAR-style stem (conv 3x3 stride 1, no max-pool) so small
    inputs keep their resolution; larger ones use the standard 7x7 stride-2 conv + max-pool.
    """

    def __init__(
        self,
        body: torchvision.models.ResNet,
        in_chans: int,
        num_classes: int,
        small_stem: bool,
        dropout: float = 0.0,
    ):
        super().__init__()
        width = body.conv1.out_channels
        if small_stem:
            body.conv1 = nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False)
            body.maxpool = nn.Identity()
        else:
            body.conv1 = nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(body.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.num_features = body.fc.in_features
        body.fc = nn.Identity()
        self.body = body
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> globally average-pooled features [B, num_features] (512 or 2048)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> logits [B, num_classes]."""
        return self.head(self.drop(self.forward_features(x)))

    def no_weight_decay(self) -> set[str]:
        """No parameters beyond biases and norms need exempting."""
        return set()


def _build(name: str, cfg: ModelConfig, spec: ImageSpec) -> ResNet:
    """torchvision's `name` body with `cfg.norm` layers (null = batch). Residual branches end
    with a zero-initialized norm scale (each block starts as the identity), except with norm
    none, where there is no scale to zero. torchvision is imported here, not at start-up: its
    package import pulls in torch._dynamo (about 1 s for every command, ResNet or not)."""
    ctor = getattr(importlib.import_module("torchvision.models"), name)
    norm = resolve_norm(cfg.norm, "resnet")
    body = ctor(weights=None, zero_init_residual=norm != "none",
                norm_layer=lambda channels: norm2d(norm, channels))
    small = max(spec.height, spec.width) <= SMALL_IMAGE_MAX
    return ResNet(body, spec.channels, spec.num_classes, small, cfg.dropout)


@register("resnet18", "resnet", "torchvision ResNet-18 (~11M params), small-image stem <= 64 px")
def resnet18(cfg: ModelConfig, spec: ImageSpec) -> ResNet:
    """ResNet-18 for `spec` images."""
    return _build("resnet18", cfg, spec)


@register("resnet34", "resnet", "torchvision ResNet-34 (~21M params), small-image stem <= 64 px")
def resnet34(cfg: ModelConfig, spec: ImageSpec) -> ResNet:
    """ResNet-34 for `spec` images."""
    return _build("resnet34", cfg, spec)


@register("resnet50", "resnet", "torchvision ResNet-50 (~24M params), small-image stem <= 64 px")
def resnet50(cfg: ModelConfig, spec: ImageSpec) -> ResNet:
    """ResNet-50 (bottleneck blocks) for `spec` images."""
    return _build("resnet50", cfg, spec)

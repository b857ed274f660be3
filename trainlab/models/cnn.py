"""A small ResNet-style CNN for tiny images (8x8 to 32x32): the default model, fast on a CPU."""

from __future__ import annotations

import torch
from torch import nn

from trainlab.config.schema import ModelConfig
from trainlab.models.norm import norm2d, resolve_norm
from trainlab.models.registry import ImageSpec, register

DEFAULT_WIDTHS = [32, 64, 128]


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1,
            norm: str = "batch") -> nn.Sequential:
    """Conv (same padding) + norm (`trainlab.models.norm.norm2d`; the conv has a bias only
    with norm none): [B, c_in, H, W] -> [B, c_out, H/s, W/s] (ceil)."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2,
                     bias=norm == "none")
    return nn.Sequential(conv, norm2d(norm, c_out))


class ResidualBlock(nn.Module):
    """relu(conv-norm-relu-conv-norm(x) + shortcut(x)); shortcut is a 1x1 conv+norm if channels
    change."""

    def __init__(self, c_in: int, c_out: int, norm: str = "batch"):
        super().__init__()
        relu = nn.ReLU(inplace=True)
        self.branch = nn.Sequential(conv_bn(c_in, c_out, norm=norm), relu,
                                    conv_bn(c_out, c_out, norm=norm))
        self.shortcut = (nn.Identity() if c_in == c_out
                         else conv_bn(c_in, c_out, kernel=1, norm=norm))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, c_in, H, W] -> [B, c_out, H, W]."""
        return self.act(self.branch(x) + self.shortcut(x))


class SmallCNN(nn.Module):
    """Stem conv3x3 -> one residual block per width, 2x2 max-pool between stages -> GAP -> head.

    `norm` is batch (the default), layer, group or none (`trainlab.models.norm`).
    The spatial size halves between stages (while it is at least 2) as the channels grow.
    `stem_stride=2` makes the stem conv stride 2, so the stages start at ceil(H/2) x ceil(W/2):
    about 4x fewer FLOPs, for 28x28 images and up.
    """

    def __init__(
        self,
        in_chans: int,
        num_classes: int,
        widths: list[int],
        image_hw: tuple[int, int],
        dropout: float = 0.0,
        stem_stride: int = 1,
        norm: str = "batch",
    ):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(in_chans, widths[0], stride=stem_stride, norm=norm),
                                  nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        h, w = -(-image_hw[0] // stem_stride), -(-image_hw[1] // stem_stride)  # ceil
        c_in = widths[0]
        for i, c_out in enumerate(widths):
            stages.append(ResidualBlock(c_in, c_out, norm))
            c_in = c_out
            if i < len(widths) - 1 and min(h, w) >= 2:
                stages.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.num_features = widths[-1]
        self.head = nn.Linear(widths[-1], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> globally average-pooled features [B, widths[-1]]."""
        x = self.stages(self.stem(x))  # [B, widths[-1], H', W']
        return self.pool(x).flatten(1)  # [B, widths[-1], 1, 1] -> [B, widths[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> logits [B, num_classes]."""
        return self.head(self.drop(self.forward_features(x)))

    def no_weight_decay(self) -> set[str]:
        """No parameters beyond biases and norms need exempting."""
        return set()


@register("cnn", "cnn", "small ResNet-style CNN for tiny images; model.widths sets the stages")
def cnn(cfg: ModelConfig, spec: ImageSpec) -> SmallCNN:
    """Build a `SmallCNN` with `cfg.widths` (default [32, 64, 128]), `cfg.stem_stride` and
    `cfg.norm` (null = batch)."""
    widths = list(cfg.widths) if cfg.widths is not None else list(DEFAULT_WIDTHS)
    return SmallCNN(spec.channels, spec.num_classes, widths, (spec.height, spec.width),
                    cfg.dropout, cfg.stem_stride, resolve_norm(cfg.norm, "cnn"))

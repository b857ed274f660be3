"""Normalization layers picked by `model.norm`: one place maps a name to a layer.

- `batch`: BatchNorm (statistics over the batch and the spatial positions, per channel);
- `layer`: statistics over all features of one sample. For convolutional maps this is
  `GroupNorm(1, C)` (mean/std over C x H x W per image, a per-channel scale and shift), for
  vectors and ViT tokens `LayerNorm`;
- `group`: `GroupNorm(group_count(C), C)`: statistics per image over groups of channels;
- `none`: `Identity` (convolutions then get a bias, which BatchNorm otherwise makes redundant).

`model.norm=auto` (the default) keeps the model's own: batch for `cnn` and the ResNets, none
for `mlp`, layer for the ViTs. ViTs take `layer` or `none` only (`check_norm` refuses the
rest).
"""

from __future__ import annotations

from torch import nn

from trainlab.errors import ConfigError

GROUP_MAX = 32  # at most 32 groups, as in Wu & He (2018)
GROUP_MIN_CHANNELS = 4  # ... and at least 4 channels in each group

# family -> (its own norm, the norms it can be built with)
FAMILY_NORMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mlp": ("none", ("batch", "layer", "group", "none")),
    "cnn": ("batch", ("batch", "layer", "group", "none")),
    "resnet": ("batch", ("batch", "layer", "group", "none")),
    "vit": ("layer", ("layer", "none")),
}


def group_count(channels: int) -> int:
    """Groups for `channels`: the largest divisor of `channels` that is at most GROUP_MAX (32)
    and leaves at least GROUP_MIN_CHANNELS (4) channels per group; 1 for fewer than 8 channels.
    E.g. 32 -> 8, 64 -> 16, 128 -> 32, 512 -> 32, 96 -> 24, 6 -> 1."""
    best = 1
    for g in range(1, min(GROUP_MAX, channels // GROUP_MIN_CHANNELS) + 1):
        if channels % g == 0:
            best = g
    return best


def resolve_norm(norm: str, family: str) -> str:
    """The norm a model of `family` is built with: `norm`, or the family's own for auto."""
    own, _ = FAMILY_NORMS.get(family, ("none", ()))
    return own if norm == "auto" else norm


def check_norm(norm: str, family: str, model_name: str) -> None:
    """ConfigError naming model.norm when a `family` model cannot be built with `norm`."""
    if norm == "auto" or family not in FAMILY_NORMS:
        return
    own, allowed = FAMILY_NORMS[family]
    if norm not in allowed:
        raise ConfigError(
            f"model.norm={norm} does not exist for model.name={model_name} (a {family} model "
            f"normalizes with: {', '.join(allowed)}; its own is {own}). Set model.norm to one "
            f"of those, or model.norm=auto for the model's own.")


def norm2d(kind: str, channels: int) -> nn.Module:
    """Normalization of feature maps [B, C, H, W] (shape unchanged)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def norm1d(kind: str, features: int) -> nn.Module:
    """Normalization of feature vectors [B, F] (shape unchanged)."""
    if kind == "batch":
        return nn.BatchNorm1d(features)
    if kind == "layer":
        return nn.LayerNorm(features)
    if kind == "group":
        return nn.GroupNorm(group_count(features), features)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def token_norm(kind: str, dim: int) -> nn.Module:
    """Normalization of ViT tokens [B, L, D]: LayerNorm, or Identity for `none`."""
    if kind == "layer":
        return nn.LayerNorm(dim)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"ViT tokens take norm layer or none, got {kind!r}")

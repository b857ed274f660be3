"""Model registry: every model is a small factory `(cfg, spec) -> nn.Module`, picked by name.

Each registered model follows one contract (tested over every entry in `tests/test_models.py`):

- `forward(x: [B, C, H, W] float) -> logits [B, num_classes]`
- `forward_features(x: [B, C, H, W]) -> [B, num_features]` pooled features, before the head
- `num_features: int` and `head: nn.Linear` (replaceable, e.g. for a linear probe)
- `no_weight_decay() -> set[str]`: parameter names (as in `named_parameters`) that get no weight
  decay besides biases and norm weights (the optimizer already skips every param with ndim <= 1)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from trainlab.config.schema import ModelConfig
from trainlab.errors import ConfigError


@dataclass(frozen=True)
class ImageSpec:
    """What the data gives a model: images `[B, channels, height, width]`, `num_classes` labels."""

    channels: int
    height: int
    width: int
    num_classes: int


ModelFactory = Callable[[ModelConfig, ImageSpec], nn.Module]


@dataclass(frozen=True)
class _Entry:
    name: str
    family: str
    description: str
    factory: ModelFactory


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, family: str, description: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register `factory(cfg, spec) -> nn.Module` under `name` (unique)."""

    def wrap(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = _Entry(name, family, description, factory)
        return factory

    return wrap


def list_models() -> list[tuple[str, str, str]]:
    """Every registered model as `(name, family, description)`, sorted by family then name."""
    entries = sorted(_REGISTRY.values(), key=lambda e: (e.family, e.name))
    return [(e.name, e.family, e.description) for e in entries]


def build_model(cfg: ModelConfig, spec: ImageSpec) -> nn.Module:
    """Build the model `cfg.name` for images `[B, spec.channels, spec.height, spec.width]`.

    Raises `ConfigError` for an unknown name (listing the valid ones) or invalid model options.
    """
    entry = _REGISTRY.get(cfg.name)
    if entry is None:
        valid = ", ".join(name for name, _, _ in list_models())
        raise ConfigError(
            f"model.name={cfg.name!r} is not a known model. Valid names: {valid}. "
            "Set one with model.name=<name> (`trainlab models` describes each)."
        )
    return entry.factory(cfg, spec)


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters in `module` (only those with requires_grad if trainable_only)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

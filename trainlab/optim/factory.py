"""Optimizer factory with weight-decay parameter groups."""

from __future__ import annotations

import torch
from torch import nn

from trainlab.config.schema import OptimConfig
from trainlab.errors import ConfigError

NAMES = ("sgd", "adam", "adamw")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into [decay, no_decay] groups.

    Weight decay applies to conv and linear weights only: never to biases, normalization
    parameters (every parameter with ndim <= 1) or to the names the model lists in
    `no_weight_decay()` (ViT position embedding, cls token...).
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    decay_names, no_decay_names = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name in skip or name.split(".")[-1] in skip:
            no_decay.append(p)
            no_decay_names.append(name)
        else:
            decay.append(p)
            decay_names.append(name)
    return [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov), Adam or AdamW over `param_groups(model)`; lr is set per step."""
    if cfg.name not in NAMES:
        raise ConfigError(
            f"Unknown optimizer optim.name={cfg.name!r}. Valid names: {', '.join(NAMES)}."
        )
    if cfg.lr <= 0:
        raise ConfigError(
            f"optim.lr must be positive (got {cfg.lr}); try 1e-3 for adamw, 0.1 for sgd."
        )
    if cfg.weight_decay < 0:
        raise ConfigError(f"optim.weight_decay must be >= 0 (got {cfg.weight_decay}).")
    groups = param_groups(model, cfg.weight_decay)
    for g in groups:
        g.pop("names")
    groups = [g for g in groups if g["params"]]
    if cfg.name == "sgd":
        if cfg.nesterov and cfg.momentum <= 0:
            raise ConfigError("optim.nesterov=true needs optim.momentum > 0 (for example 0.9).")
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {cfg.betas}.")
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)

"""Optimizer factory with weight-decay parameter groups and ViT layer-wise lr decay."""

from __future__ import annotations

import torch
from torch import nn

from trainlab.config.schema import OPTIMIZERS, OptimConfig
from trainlab.errors import ConfigError

NAMES = OPTIMIZERS  # optim.name choices, stated in the schema


def _no_decay_names(model: nn.Module) -> set[str]:
    """Names listed by `no_weight_decay()` of `model` and of every submodule, as full parameter
    names ("model.pos_embed" when a method wraps the model)."""
    skip: set[str] = set()
    for prefix, m in model.named_modules():
        fn = getattr(m, "no_weight_decay", None)
        if callable(fn):
            skip |= {f"{prefix}.{n}" if prefix else n for n in fn()}
    return skip


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into [decay, no_decay] groups.

    Weight decay applies to conv and linear weights only: never to biases, normalization
    parameters (every parameter with ndim <= 1) or to the names the model (or any submodule,
    e.g. the model inside a method) lists in `no_weight_decay()` (ViT position embedding, cls
    token...).
    """
    skip = _no_decay_names(model)
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


def _find_layered(module: nn.Module) -> tuple[str, nn.Module] | None:
    """(name prefix, the first submodule that numbers its layers) inside `module` (itself, or
    a method's model). Such a model (the ViT) has `num_layers()` and `layer_id(name)`: the
    depth of each of its parameters for layer-wise lr decay, 0 for the embeddings up to
    num_layers() for the head."""
    for prefix, m in module.named_modules():
        if callable(getattr(m, "layer_id", None)) and callable(getattr(m, "num_layers", None)):
            return (f"{prefix}." if prefix else ""), m
    return None


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """`param_groups` split further by ViT depth, each group with its `lr_scale`.

    lr_scale = layer_decay ** (num_blocks + 1 - layer_id) (see the ViT's `layer_id`): the head and
    final norm train at the full lr, block i at layer_decay ** (num_blocks - i), the patch and
    position embeddings at layer_decay ** (num_blocks + 1). Parameters outside the ViT (a
    method's own heads) keep lr_scale 1. The trainer sets each group's lr to lr * lr_scale.
    """
    found = _find_layered(model)
    if found is None:
        raise ConfigError(
            f"optim.layer_decay={layer_decay} applies to Vision Transformers only (it scales "
            f"the lr by block depth); this model has no transformer blocks. Use a vit_* model "
            f"or set optim.layer_decay=1.")
    prefix, layered = found
    top = layered.num_layers()  # the head's layer id: num_blocks + 1
    groups: dict[tuple[int, bool], dict] = {}
    for base in param_groups(model, weight_decay):
        for name, p in zip(base["names"], base["params"], strict=True):
            inside = name.startswith(prefix)
            layer = layered.layer_id(name[len(prefix):]) if inside else top
            key = (layer, base["weight_decay"] > 0)
            g = groups.setdefault(key, {"params": [], "names": [], "weight_decay":
                                        base["weight_decay"],
                                        "lr_scale": layer_decay ** (top - layer)})
            g["params"].append(p)
            g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov), Adam or AdamW over `param_groups(model)` (or
    `layer_decay_groups` when optim.layer_decay < 1); lr is set per step.

    `model` is the module whose parameters train: the method (model plus any head or decoder
    of its own) in a run. `cfg` is validated (`trainlab.config.validate`): name, lr, betas...
    are in their schema ranges.
    """
    if cfg.layer_decay < 1:
        groups = layer_decay_groups(model, cfg.weight_decay, cfg.layer_decay)
    else:
        groups = param_groups(model, cfg.weight_decay)
    for g in groups:
        g.pop("names")
    groups = [g for g in groups if g["params"]]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    # fused CUDA kernels when every parameter is on a GPU; PyTorch's foreach path otherwise
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)

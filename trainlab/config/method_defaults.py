"""Per-method defaults: the values a method uses for keys the recipe and command line left unset.

The schema's defaults (`schema.py`) are those of supervised training. A linear probe or an MAE
run wants others (no augmentation and a higher lr for a probe, betas (0.9, 0.95) for MAE...):
`METHOD_DEFAULTS` states them, once, with where each value comes from, and `apply` fills them
in. Layers, later wins: schema defaults <- the method's defaults <- recipe <- command line.

What counts is whether a key was *set* (named in the recipe or on the command line), not
whether its value differs from the schema default: `optim.lr=2e-3` keeps 2e-3 for a probe. Two
groups of keys go together:

- augmentation: a method's augmentation default (`data.augment=false` for linear_probe) is
  skipped when any augmentation key (`AUGMENT_KEYS`) was set, e.g. `data.flip=true`, so that
  augmentation follows the keys the user set and the data set's defaults for the rest;
- optimizer: lr, weight decay and betas were measured with `OPTIMIZER`; they are skipped when
  `optim.name` names another optimizer.

The filled-in values are written into the config (so `config.yaml`, checkpoints and the resume
check see the effective values: a resumed or evaluated run uses exactly what it trained with),
and listed in `Config.method_defaults`, which the run header prints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trainlab.config.schema import Config

OPTIMIZER = "adamw"  # the optimizer every optim.* value below was measured with
AUGMENT_KEYS = frozenset({
    "data.augment", "data.crop_padding", "data.flip", "data.rotate_deg", "data.brightness",
    "data.contrast", "data.saturation", "data.hue", "data.crop_scale", "data.auto_augment",
    "data.random_erasing", "data.mixup_alpha", "data.cutmix_alpha", "data.mix_prob",
    "data.mix_switch_prob",
})
_RESULTS = "benchmarks/RESULTS.md"


@dataclass(frozen=True)
class Default:
    """One method's value for one key, and where it comes from."""

    key: str  # dotted config key
    value: Any  # of the key's type
    why: str  # the measurement or paper behind it (the README table quotes it)


@dataclass(frozen=True)
class Applied:
    """A default filled in for a key left unset: `key=value`."""

    key: str
    value: Any


@dataclass(frozen=True)
class Skipped:
    """Defaults of the method not filled in because of a key the user set."""

    keys: tuple[str, ...]
    because: str  # e.g. "you set data.flip"


_DIGITS = _RESULTS + " (per-method defaults: digits probes)"
_FASHION = _RESULTS + " (Fashion-MNIST, issue 4)"
_POOL_WHY = ("every probe in " + _RESULTS + " reads the mean of the patch tokens; digits: "
             "the MAE probe 0.7827 with it, 0.7521 with the cls token " + _DIGITS + " (ViTs "
             "only: other models ignore model.pool)")

METHOD_DEFAULTS: dict[str, tuple[Default, ...]] = {
    # The schema defaults are supervised training's own (recipes/, benchmarks/RESULTS.md).
    "supervised": (),
    # A probe fits a linear head to fixed features: the head sees the features of the images
    # as they are (no augmentation), without weight decay, at a high lr (one linear layer
    # after a BatchNorm, built into the method, converges fast); the ViT gives the mean of
    # its patch tokens.
    "linear_probe": (
        Default("data.augment", False, "digits: the MAE probe 0.7827 without, 0.4150 with "
                "the data set's augmentation " + _DIGITS + "; every probe in " + _RESULTS
                + " ran without"),
        Default("optim.lr", 1e-2, _FASHION + ": probe_mae/probe_random (AdamW 1e-2 at batch "
                "256); digits: 0.7827 at 1e-2, 0.6936 at 2e-3 (batch 64) " + _DIGITS),
        Default("optim.weight_decay", 0.0, _FASHION + " probes; MAE's linear probe uses none; "
                "no measurable effect on digits " + _DIGITS),
        Default("sched.warmup_epochs", 0.2, _FASHION + ": probe_mae/probe_random; no "
                "measurable effect on digits " + _DIGITS),
        Default("model.pool", "mean", _POOL_WHY),
    ),
    # Fine-tuning a pretrained encoder wants a lower lr than training from scratch.
    "finetune": (
        Default("optim.lr", 1e-3, _FASHION + ": finetune_1pct (AdamW 1e-3 at batch 64, +13.2 "
                "points over scratch)"),
        Default("model.pool", "mean", "MAE fine-tunes on the mean of the patch tokens; the "
                "probe reads the same feature"),
    ),
    # MAE (He et al. 2021): AdamW with betas (0.9, 0.95), weight decay 0.05, warmup. Its lr
    # is not scaled by the batch here: 1.5e-3 was measured good at batch 256 (Fashion) and at
    # batch 64 (digits), where linear scaling (3.75e-4) lost 7 probe points.
    "mae": (
        Default("optim.lr", 1.5e-3, _FASHION + ": mae_pretrain (batch 256); digits (batch "
                "64): probed 0.7827, against 0.7131 after 1.5e-3 x 64/256 " + _DIGITS),
        Default("optim.betas", [0.9, 0.95], "MAE paper; " + _FASHION + ": mae_pretrain"),
        Default("optim.weight_decay", 0.05, "MAE paper; " + _FASHION + ": mae_pretrain"),
        Default("sched.warmup_epochs", 1.0, _FASHION + ": mae_pretrain (1 of 5 epochs)"),
        Default("model.pool", "mean", "not used by MAE's loss: the feature the probe, the kNN "
                "monitor and `trainlab knn` read"),
    ),
    # DINO (Caron et al. 2021): AdamW 5e-4 (its rate for batch 256), weight decay 0.04 (the
    # start of its 0.04 -> 0.4 schedule), gradient clipping 3.
    "dino": (
        Default("optim.lr", 5e-4, "DINO paper (batch 256); the DINO runs in " + _RESULTS
                + " (batch 64 and 256)"),
        Default("optim.weight_decay", 0.04, "DINO paper; the DINO runs in " + _RESULTS),
        Default("sched.warmup_epochs", 1.0, "the DINO runs in " + _RESULTS),
        Default("train.grad_clip", 3.0, "DINO paper; the DINO runs in " + _RESULTS),
        Default("model.pool", "mean", _RESULTS + " (DINO): a random small ViT's mean-pooled "
                "tokens keep digits apart (batch cosine 0.78 with 4x4 patches) where its cls "
                "token does not (0.998); the head and the probe then read the same feature"),
    ),
    # SimCLR: nothing measured here; only the feature the probe reads.
    "simclr": (
        Default("model.pool", "mean", "the feature the probe reads (ViTs; CNNs ignore it); "
                "no SimCLR measurement here, so its optimizer keeps the schema defaults"),
    ),
}


def shown(v: Any) -> str:
    """A value as the header, config.yaml comment and README write it: false, 0.01, [0.9, 0.95]."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "[" + ", ".join(shown(x) for x in v) + "]"
    return str(v)


def describe(items: tuple[Applied, ...]) -> str:
    """'optim.lr=0.01, model.pool=mean' for the run header."""
    return ", ".join(f"{a.key}={shown(a.value)}" for a in items)


def describe_skipped(items: tuple[Skipped, ...]) -> str:
    """'data.augment (you set data.flip); optim.lr, optim.betas (...)' for the run header."""
    return "; ".join(f"{', '.join(s.keys)} ({s.because})" for s in items)


def apply(cfg: Config, user_set: set[str] | frozenset[str]) -> Config:
    """`cfg` (schema defaults <- recipe <- command line) with the defaults of its method filled
    in for every key not in `user_set` (the dotted keys the recipe or command line named),
    and `method_defaults` / `method_defaults_skipped` recording what was filled in or not.
    An unknown method name has no defaults (`check_config` reports the name)."""
    table = METHOD_DEFAULTS.get(cfg.method.name, ())
    changes: dict[str, dict[str, Any]] = {}
    applied: list[Applied] = []
    skipped: dict[str, list[str]] = {}
    aug_set = sorted(user_set & AUGMENT_KEYS)
    for d in table:
        if d.key in user_set:
            continue
        if d.key in AUGMENT_KEYS and aug_set:
            skipped.setdefault(f"you set {', '.join(aug_set)}", []).append(d.key)
            continue
        if d.key.startswith("optim.") and cfg.optim.name != OPTIMIZER:
            skipped.setdefault(f"measured with optim.name={OPTIMIZER}; this run uses "
                               f"{cfg.optim.name}", []).append(d.key)
            continue
        section, name = d.key.split(".")
        changes.setdefault(section, {})[name] = list(d.value) if isinstance(d.value, list) \
            else d.value
        applied.append(Applied(d.key, d.value))
    sections = {s: dataclasses.replace(getattr(cfg, s), **kw) for s, kw in changes.items()}
    return dataclasses.replace(
        cfg, **sections, method_defaults=tuple(applied),
        method_defaults_skipped=tuple(Skipped(tuple(k), why) for why, k in skipped.items()))

"""Inference over a split: metric means (all-reduced across ranks) and feature extraction.

The one inference loop besides training: `evaluate` runs a method's `evaluate(batch)` over a
loader; `extract_features` runs a model's `forward_features` (kNN banks, probes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from trainlab.dist.setup import all_gather_objects, all_reduce_sum
from trainlab.methods.base import Method


def autocast(device: torch.device, precision: str):
    """Autocast context for `train.precision` (fp32 = disabled)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


@torch.no_grad()
def evaluate(method: Method, loader: Any, precision: str = "fp32") -> dict[str, float]:
    """Mean of each metric of `method.evaluate` over the whole split (weighted by batch size).

    With several ranks each evaluates its slice of every batch and the sums are all-reduced,
    so every sample counts exactly once.
    """
    was_training = method.training
    method.eval()
    device = next(method.parameters()).device
    sums: dict[str, Tensor] = {}
    n = 0
    for batch in loader.epoch(0):
        b = len(batch[1])
        if b == 0:  # a rank's slice of a short last batch can be empty
            continue
        with autocast(device, precision):
            out = method.evaluate(batch)
        for k, v in out.items():
            sums[k] = sums.get(k, 0) + v.detach().float() * b
        n += b
    method.train(was_training)
    return reduce_means(sums, n, device)


@torch.no_grad()
def extract_features(model: nn.Module, loader: Any) -> tuple[Tensor, Tensor]:
    """Features of every image of `loader` (one pass, eval mode, no augmentation).

    Returns (L2-normalized features float32 [N, F], labels int64 [N]) on the model's device.
    """
    was_training = model.training
    model.eval()
    feats, labels = [], []
    for batch in loader.epoch(0):
        x, y = batch[0], batch[1]
        feats.append(F.normalize(model.forward_features(x).float(), dim=1))
        labels.append(y)
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def reduce_means(sums: dict[str, Tensor], n: int, device: torch.device) -> dict[str, float]:
    """{name: sum over samples} and a sample count -> global means over all ranks."""
    return reduce_sums(sums, n, device)[0]


def reduce_sums(sums: dict[str, Tensor], n: int,
                device: torch.device) -> tuple[dict[str, float], int]:
    """Like `reduce_means`, also returning the sample count summed over ranks (one all-reduce)."""
    keys = sorted(sums) if sums else []
    if dist.is_initialized():
        names = all_gather_objects(keys)
        keys = sorted({k for ks in names for k in ks})  # type: ignore[union-attr]
    vec = torch.stack([torch.as_tensor(sums.get(k, 0.0), dtype=torch.float32, device=device)
                       for k in keys] + [torch.tensor(float(n), device=device)])
    all_reduce_sum(vec)
    total = vec[-1].item()
    return {k: (vec[i] / max(total, 1.0)).item() for i, k in enumerate(keys)}, int(total)

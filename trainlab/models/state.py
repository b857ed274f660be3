"""Matching saved weights against a module: the one place that compares keys and shapes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

SHOW = 5  # keys listed per kind of difference in a message


@dataclass
class Mismatch:
    """How a saved state dict differs from a module's own (empty lists: it fits)."""

    missing: list[str] = field(default_factory=list)  # in the module, not saved
    unexpected: list[str] = field(default_factory=list)  # saved, not in the module
    shapes: list[str] = field(default_factory=list)  # "key (saved shape) vs (own shape)"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self, saved: str = "the checkpoint", own: str = "this model") -> str:
        """e.g. "missing in the checkpoint (2): a, b; shape saved vs this model (1): ..."."""
        problems = []
        for label, items in ((f"missing in {saved}", self.missing),
                             (f"not in {own}", self.unexpected),
                             (f"shape saved vs {own}", self.shapes)):
            if items:
                more = f" and {len(items) - SHOW} more" if len(items) > SHOW else ""
                problems.append(f"{label} ({len(items)}): {', '.join(items[:SHOW])}{more}")
        return "; ".join(problems)


def match_state(own: Mapping[str, Tensor], saved: Mapping[str, Any]) -> Mismatch:
    """Compare key sets and shapes of `own` (a module's state dict) and `saved`."""
    return Mismatch(
        missing=[k for k in own if k not in saved],
        unexpected=[k for k in saved if k not in own],
        shapes=[f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                if k in saved and getattr(saved[k], "shape", None) != v.shape],
    )


@torch.no_grad()
def copy_state(own: Mapping[str, Tensor], saved: Mapping[str, Tensor]) -> None:
    """Copy `saved[k]` into `own[k]` in place for every key of `own` (checked beforehand)."""
    for k, v in own.items():
        v.copy_(saved[k])


def load_matching(module: torch.nn.Module, saved: Mapping[str, Tensor]) -> Mismatch:
    """Load `saved` into `module` when every key and shape fits; else return the mismatch and
    leave the module untouched."""
    own = module.state_dict()
    bad = match_state(own, saved)
    if not bad:
        module.load_state_dict(dict(saved))
    return bad

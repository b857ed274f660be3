"""Supervised classification: cross-entropy (with optional label smoothing) on the labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainlab.config.schema import Config
from trainlab.methods.base import Batch, Method, register_method


def topk_correct(logits: Tensor, y: Tensor, k: int) -> Tensor:
    """Fraction of rows of logits [B, K] whose label y [B] is among the top k. Returns a scalar."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices  # [B, k]
    return (top == y[:, None]).any(dim=1).float().mean()


class Supervised(Method):
    def __init__(self, model: nn.Module, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        x, y = batch
        logits = self.model(x)  # [B, K]
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        acc = (logits.detach().argmax(1) == y).float().mean()
        return {"loss": loss, "acc": acc}

    @torch.no_grad()
    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        x, y = batch
        logits = self.model(x).float()
        out = {
            "loss": F.cross_entropy(logits, y),
            "acc": (logits.argmax(1) == y).float().mean(),
        }
        if logits.shape[1] >= 5:
            out["top5"] = topk_correct(logits, y, 5)
        return out


@register_method("supervised")
def _supervised(cfg: Config, model: nn.Module) -> Method:
    return Supervised(model, label_smoothing=cfg.train.label_smoothing)

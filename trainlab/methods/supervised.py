"""Supervised classification: cross-entropy (with optional label smoothing) on the labels.

Training labels are class ids int64 [B], or soft labels float [B, K] (rows summing to 1) from
Mixup/CutMix; evaluation always uses class ids.
"""

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


def soft_cross_entropy(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of logits [B, K] against soft targets [B, K] (rows summing to 1).

    Label smoothing mixes the target with the uniform distribution, target * (1 - eps) + eps / K,
    as F.cross_entropy does for class ids, so one-hot targets give the same loss as it does.
    """
    k = logits.shape[1]
    target = target.float()
    if label_smoothing > 0:
        target = target * (1 - label_smoothing) + label_smoothing / k
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


class Supervised(Method):
    def __init__(self, model: nn.Module, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        logits = self.model(x)  # [B, K]
        if y.is_floating_point():  # soft labels [B, K] (mixup / cutmix)
            loss = soft_cross_entropy(logits, y, self.label_smoothing)
            y = y.argmax(1)  # accuracy against the dominant class
        else:
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        acc = (logits.detach().argmax(1) == y).float().mean()
        return {"loss": loss, "acc": acc}

    @torch.no_grad()
    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
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

"""Supervised classification: cross-entropy or MSE (`train.loss`, with optional label
smoothing) on the labels.

Training labels are class ids int64 [B], or soft labels float [B, K] (rows summing to 1) from
Mixup/CutMix; evaluation always uses class ids. `train.loss=mse` is the squared error between
the LOGITS and the target distribution (one-hot, smoothed or mixed), mean over batch and
classes, as in Hui & Belkin (2021), rather than between softmax probabilities and the target:
through a softmax the gradient vanishes when the model is confidently wrong (the classic reason
cross-entropy trains faster), so MSE on probabilities mostly measures that saturation, while MSE
on logits is a fair second loss for the same network. Metrics: `loss` is always the optimized
loss; a second key names it (`ce` or `mse`), so curves say which loss they show.
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


def target_distribution(y: Tensor, k: int, label_smoothing: float = 0.0) -> Tensor:
    """Targets as float [B, K] rows summing to 1: class ids int64 [B] become one-hot, soft
    labels float [B, K] are kept; then label smoothing, target * (1 - eps) + eps / K."""
    target = F.one_hot(y, k).float() if not y.is_floating_point() else y.float()
    if label_smoothing > 0:
        target = target * (1 - label_smoothing) + label_smoothing / k
    return target


def mse_loss(logits: Tensor, y: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean squared error of logits [B, K] against the target distribution of y (class ids [B]
    or soft labels [B, K], see `target_distribution`), mean over the B x K entries."""
    target = target_distribution(y, logits.shape[1], label_smoothing)
    return F.mse_loss(logits.float(), target)


LOSS_METRIC = {"cross_entropy": "ce", "mse": "mse"}  # train.loss -> its metric name


class Supervised(Method):
    def __init__(self, model: nn.Module, label_smoothing: float = 0.0,
                 loss: str = "cross_entropy", tta: str = "none") -> None:
        super().__init__()
        if loss not in LOSS_METRIC:
            raise ValueError(f"loss must be one of {list(LOSS_METRIC)}, got {loss!r}")
        if tta not in ("none", "flip"):
            raise ValueError(f"tta must be none or flip, got {tta!r}")
        self.model = model
        self.label_smoothing = label_smoothing
        self.loss_name = loss
        self.tta = tta

    def _loss(self, logits: Tensor, y: Tensor, label_smoothing: float) -> Tensor:
        """The configured loss of logits [B, K] against class ids [B] or soft labels [B, K]."""
        if self.loss_name == "mse":
            return mse_loss(logits, y, label_smoothing)
        if y.is_floating_point():  # soft labels [B, K] (mixup / cutmix)
            return soft_cross_entropy(logits, y, label_smoothing)
        return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        logits = self.model(x)  # [B, K]
        loss = self._loss(logits, y, self.label_smoothing)
        if y.is_floating_point():
            y = y.argmax(1)  # accuracy against the dominant class
        acc = (logits.detach().argmax(1) == y).float().mean()
        return {"loss": loss, "acc": acc, LOSS_METRIC[self.loss_name]: loss.detach()}

    @torch.no_grad()
    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        logits = self.model(x).float()  # [B, K]
        if self.tta == "flip":  # mean of the logits of the image and its mirror (width axis)
            logits = (logits + self.model(x.flip(-1)).float()) / 2
        loss = self._loss(logits, y, 0.0)
        out = {
            "loss": loss,
            LOSS_METRIC[self.loss_name]: loss,
            "acc": (logits.argmax(1) == y).float().mean(),
        }
        if logits.shape[1] >= 5:
            out["top5"] = topk_correct(logits, y, 5)
        return out


@register_method("supervised")
def _supervised(cfg: Config, model: nn.Module) -> Method:
    return Supervised(model, label_smoothing=cfg.train.label_smoothing, loss=cfg.train.loss,
                      tta=cfg.train.tta)

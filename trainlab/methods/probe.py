"""Downstream evaluation of a pretrained encoder: `linear_probe` and `finetune`.

Both train a classifier with `train.loss` (cross-entropy or MSE) and report acc/top5 exactly
as `supervised` does (they reuse its code); the encoder weights usually come from
`model.init=RUN_OR_CHECKPOINT`.

- linear_probe: the encoder is frozen (no gradients, and kept in eval mode so BatchNorm
  statistics and dropout do not move); only a new head learns: BatchNorm1d without affine
  parameters (feature standardization, as MAE's probe) then a Linear layer.
- finetune: every weight trains; with ViTs, `optim.layer_decay` < 1 gives lower learning
  rates to layers nearer the input (see trainlab.optim.factory).
"""

from __future__ import annotations

from torch import nn

from trainlab.config.schema import Config
from trainlab.methods.base import Method, register_method
from trainlab.methods.supervised import Supervised


class ProbeHead(nn.Sequential):
    """BatchNorm1d(affine=False) -> Linear: features [B, F] -> logits [B, K]."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__(nn.BatchNorm1d(num_features, affine=False),
                         nn.Linear(num_features, num_classes))
        nn.init.trunc_normal_(self[1].weight, std=0.01)
        nn.init.zeros_(self[1].bias)


class LinearProbe(Supervised):
    """Supervised training of a `ProbeHead` on the frozen features of `model`.

    The model's head is replaced in place (the checkpointed module is the probed classifier);
    a model whose head already is a `ProbeHead` (an EMA copy, a resumed run) keeps it.
    """

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0,
                 loss: str = "cross_entropy", tta: str = "none") -> None:
        super().__init__(model, label_smoothing, loss, tta)
        if not isinstance(model.head, ProbeHead):
            model.head = ProbeHead(model.num_features, model.head.out_features)  # trainable
        for name, p in model.named_parameters():
            if not name.startswith("head."):
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> LinearProbe:
        """Only the head follows `mode`; the encoder always stays in eval mode."""
        super().train(mode)
        self.model.eval()
        self.model.head.train(mode)
        return self


@register_method("linear_probe")
def _linear_probe(cfg: Config, model: nn.Module) -> Method:
    return LinearProbe(model, label_smoothing=cfg.train.label_smoothing, loss=cfg.train.loss,
                       tta=cfg.train.tta)


@register_method("finetune")
def _finetune(cfg: Config, model: nn.Module) -> Method:
    return Supervised(model, label_smoothing=cfg.train.label_smoothing, loss=cfg.train.loss,
                      tta=cfg.train.tta)

"""Numbers of a classifier's test predictions: confusion matrix, per-class precision / recall /
F1, the most-confused pairs, and calibration (reliability bins and expected calibration error).

All take labels int64 [N] and predictions int64 [N] (or probabilities float [N, K]) on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def confusion_matrix(labels: Tensor, preds: Tensor, num_classes: int) -> Tensor:
    """int64 [K, K]: entry [t, p] counts the images of true class t predicted as p."""
    idx = labels.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def row_normalized(cm: Tensor) -> Tensor:
    """float [K, K]: each row divided by its sum (the recall of the diagonal); empty rows 0."""
    rows = cm.sum(dim=1, keepdim=True).clamp(min=1)
    return cm.double() / rows


@dataclass
class ClassScores:
    """Per class k (all [K]): precision, recall, F1 (0 where undefined) and support."""

    precision: Tensor
    recall: Tensor
    f1: Tensor
    support: Tensor


def per_class(cm: Tensor) -> ClassScores:
    """Precision = tp / predicted, recall = tp / true, F1 their harmonic mean, from cm [K, K]."""
    tp = cm.diag().double()
    predicted, true = cm.sum(dim=0).double(), cm.sum(dim=1).double()
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(true > 0, tp / true.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12),
                     torch.zeros_like(tp))
    return ClassScores(precision, recall, f1, cm.sum(dim=1))


def most_confused(cm: Tensor, top: int = 10) -> list[tuple[int, int, int]]:
    """The off-diagonal entries with the most images: [(true, predicted, count)], most first
    (ties by class ids), zero counts left out."""
    k = cm.shape[0]
    pairs = [(int(cm[t, p]), t, p) for t in range(k) for p in range(k) if t != p and cm[t, p] > 0]
    pairs.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [(t, p, n) for n, t, p in pairs[:top]]


@dataclass
class Calibration:
    """Reliability bins over confidence (max probability) in [0, 1]: per bin [B] the mean
    confidence, the accuracy and the count; `ece` = sum_b count_b / N * |acc_b - conf_b|."""

    edges: Tensor  # [B + 1]
    confidence: Tensor
    accuracy: Tensor
    count: Tensor
    ece: float


def calibration(probs: Tensor, labels: Tensor, bins: int = 15) -> Calibration:
    """Equal-width confidence bins (the last one closed at 1)."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    b = torch.bucketize(conf.double(), edges[1:-1], right=True)  # 0..bins-1
    count = torch.bincount(b, minlength=bins)
    csum = torch.bincount(b, weights=conf.double(), minlength=bins)
    asum = torch.bincount(b, weights=correct, minlength=bins)
    n = count.clamp(min=1).double()
    mean_conf, acc = csum / n, asum / n
    ece = float(((count.double() / max(len(labels), 1)) * (acc - mean_conf).abs()).sum())
    return Calibration(edges, mean_conf, acc, count, ece)

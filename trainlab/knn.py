"""k-nearest-neighbour evaluation of a frozen encoder (as in InstDisc / DINO).

The training images' features (`model.forward_features`, L2-normalized) form the memory bank;
each query image votes among its k most cosine-similar bank images, each neighbour weighted
by exp(similarity / T); the class with the largest vote is the prediction. No training, so it
measures the features themselves: `trainlab knn RUN` after pretraining, or `KnnMonitor`
every `method.knn_every` epochs during it (logged as `knn_acc`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainlab.config.schema import Config
from trainlab.errors import ConfigError

CHUNK = 1024  # queries per similarity block: [CHUNK, N_bank] floats at a time


@torch.no_grad()
def extract_features(model: nn.Module, loader: Any) -> tuple[Tensor, Tensor]:
    """Features of every image of `loader` (one pass, eval mode, no augmentation).

    Returns (L2-normalized features float32 [N, F], labels int64 [N]) on the model's device.
    """
    was_training = model.training
    model.eval()
    feats, labels = [], []
    for x, y, _ in loader.epoch(0):
        feats.append(F.normalize(model.forward_features(x).float(), dim=1))
        labels.append(y)
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def knn_predict(queries: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int, k: int,
                temperature: float) -> Tensor:
    """Weighted kNN vote: queries [M, F], bank [N, F] (both L2-normalized), bank_labels [N]
    -> predicted classes int64 [M]. Neighbours by cosine similarity s; weights exp(s / T)."""
    k = min(k, bank.shape[0])
    preds = []
    for q in queries.split(CHUNK):
        sim = q @ bank.T  # [m, N]
        top_sim, top_idx = sim.topk(k, dim=1)  # [m, k]
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[top_idx], (top_sim / temperature).exp())
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def check_knn(k: int, temperature: float, key: str = "method.knn_k") -> None:
    """ConfigError for k < 1 or a non-positive temperature."""
    if k < 1:
        raise ConfigError(f"{key}={k} must be at least 1 (neighbours per query; 20 is usual).")
    if temperature <= 0:
        raise ConfigError(f"method.knn_temperature={temperature} must be positive (0.07 is "
                          f"usual).")


def knn_accuracy(model: nn.Module, bank_loader: Any, query_loader: Any, num_classes: int,
                 k: int, temperature: float) -> float:
    """Share of `query_loader` images whose kNN vote over `bank_loader`'s features is right."""
    bank, bank_y = extract_features(model, bank_loader)
    q, q_y = extract_features(model, query_loader)
    if len(q_y) == 0 or len(bank_y) == 0:
        return float("nan")
    pred = knn_predict(q, bank, bank_y, num_classes, k, temperature)
    return (pred == q_y).float().mean().item()


class KnnMonitor:
    """Epoch hook: every `every` epochs, kNN accuracy of `model` on the val split with the
    train split as memory bank -> {"knn_acc": ...}; {} in other epochs.

    Every rank computes it over the whole data (its loaders are not split across ranks), so no
    collective runs inside and all ranks log the same value; it draws no random numbers.
    """

    def __init__(self, cfg: Config, parts: Any, model: nn.Module) -> None:
        m = cfg.method
        check_knn(m.knn_k, m.knn_temperature)
        self.every, self.k, self.temperature = m.knn_every, m.knn_k, m.knn_temperature
        self.model, self.num_classes = model, parts.spec.num_classes
        bs = cfg.train.eval_batch_size
        self.bank = _full_loader(parts, "train", bs)
        self.queries = _full_loader(parts, "val", bs)

    def __call__(self, epoch: int) -> dict[str, float]:
        """epoch: 1-based number of the epoch just finished."""
        if epoch % self.every or len(self.queries.y) == 0:
            return {}
        return {"knn_acc": knn_accuracy(self.model, self.bank, self.queries, self.num_classes,
                                        self.k, self.temperature)}


def _full_loader(parts: Any, split: str, batch_size: int) -> Any:
    """All of `split` in order, unaugmented, on this process alone (not split across ranks)."""
    from trainlab.engine.parts import make_loader

    x, y = getattr(parts.data, f"x_{split}"), getattr(parts.data, f"y_{split}")
    return make_loader(x, y, batch_size, parts.mean, parts.std, parts.data_cfg, parts.device,
                       file_backed=parts.file_backed(split))


def knn_eval(path: str | Path, k: int | None = None,
             overrides: list[str] | tuple = ()) -> dict[str, Any]:
    """`trainlab knn`: kNN accuracy of a saved run's encoder on its test split, with its train
    split as memory bank (normalized with the stats saved in the checkpoint)."""
    from trainlab.config.load import merge, parse_override
    from trainlab.engine.parts import build_parts
    from trainlab.engine.pretrained import load_encoder, load_pretrained

    pre = load_pretrained(str(path), key="RUN_OR_CHECKPOINT")
    cfg = pre.cfg
    if overrides:
        cfg = merge(cfg, [("the command line", dict(parse_override(o) for o in overrides))])
    k = cfg.method.knn_k if k is None else k
    check_knn(k, cfg.method.knn_temperature, key="--k")
    parts = build_parts(cfg, (pre.ckpt["data"]["mean"], pre.ckpt["data"]["std"]))
    load_encoder(parts.model, pre, cfg.model.name, key="RUN_OR_CHECKPOINT")
    bs = cfg.train.eval_batch_size
    bank, test = _full_loader(parts, "train", bs), _full_loader(parts, "test", bs)
    acc = knn_accuracy(parts.model, bank, test, parts.spec.num_classes, k,
                       cfg.method.knn_temperature)
    return {"checkpoint": str(pre.path), "knn_acc": acc, "k": k,
            "temperature": cfg.method.knn_temperature, "n_test": len(test.y),
            "n_bank": len(bank.y)}

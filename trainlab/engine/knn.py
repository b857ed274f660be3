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
from torch import Tensor, nn

from trainlab.config.load import merge_overrides
from trainlab.config.schema import Config
from trainlab.data.pipeline import DataBundle
from trainlab.engine.assemble import load_data_and_model
from trainlab.engine.checks import check_config, check_measure_overrides, check_same_splits
from trainlab.engine.evaluate import extract_features
from trainlab.engine.pretrained import load_encoder, load_pretrained
from trainlab.errors import ConfigError

CHUNK = 1024  # queries per similarity block: [CHUNK, N_bank] floats at a time


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

    def __init__(self, cfg: Config, data: DataBundle, model: nn.Module) -> None:
        m = cfg.method
        self.every, self.k, self.temperature = m.knn_every, m.knn_k, m.knn_temperature
        self.model, self.num_classes = model, data.num_classes
        bs = cfg.train.eval_batch_size
        self.bank = data.full_loader("train", bs)
        self.queries = data.full_loader("val", bs)

    def __call__(self, epoch: int) -> dict[str, float]:
        """epoch: 1-based number of the epoch just finished."""
        if epoch % self.every or len(self.queries.y) == 0:
            return {}
        return {"knn_acc": knn_accuracy(self.model, self.bank, self.queries, self.num_classes,
                                        self.k, self.temperature)}


def knn_eval(path: str | Path, k: int | None = None,
             overrides: list[str] | tuple = ()) -> dict[str, Any]:
    """`trainlab knn`: kNN accuracy of a saved run's encoder on its test split, with its train
    split as memory bank (normalized with the stats saved in the checkpoint)."""
    check_measure_overrides(overrides, "knn")
    pre = load_pretrained(str(path), key="RUN_OR_CHECKPOINT")
    cfg = merge_overrides(pre.cfg, overrides)
    k_given = k is not None or any(o.startswith("method.knn_k=") for o in overrides)
    k = cfg.method.knn_k if k is None else k
    check_config(cfg)
    check_same_splits(pre.cfg, cfg, "knn", "test")
    if k < 1:
        raise ConfigError(f"--k={k} must be at least 1 (neighbours per query; 20 is usual).")
    asked = k if k_given else None
    data, model = load_data_and_model(cfg, (pre.ckpt["data"]["mean"], pre.ckpt["data"]["std"]))
    load_encoder(model, pre, cfg.model.name, key="RUN_OR_CHECKPOINT")
    bs = cfg.train.eval_batch_size
    bank, test = data.full_loader("train", bs), data.full_loader("test", bs)
    if k > len(bank.y):
        if asked is not None:
            raise ConfigError(
                f"k={asked} neighbours asked, but the memory bank (the train split) holds only "
                f"{len(bank.y)} images: every one of them would vote. Use --k {len(bank.y)} "
                f"or fewer (20 is usual).")
        k = len(bank.y)  # the run's method.knn_k exceeds a small bank: all of it votes
    acc = knn_accuracy(model, bank, test, data.num_classes, k, cfg.method.knn_temperature)
    return {"checkpoint": str(pre.path), "knn_acc": acc, "k": k,
            "temperature": cfg.method.knn_temperature, "n_test": len(test.y),
            "n_bank": len(bank.y)}

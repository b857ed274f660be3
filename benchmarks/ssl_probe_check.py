"""Cross-check of the issue-4 linear probes with a converged linear classifier.

`trainlab train method.name=linear_probe` trains its head with a few epochs of AdamW. The
mean-pooled tokens of a randomly initialized ViT are badly conditioned (one direction holds
~90% of their variance), so such a short first-order probe stops far below what a linear
classifier can reach on them, which would flatter the pretrained encoder. This script extracts
the same features once (same data split, normalization and weights as the trainlab probes) and
fits multinomial logistic regression to convergence (L-BFGS, L2 1e-4 on standardized features)
for the random-init and the MAE encoder.

    python benchmarks/ssl_probe_check.py OUT_DIR     (OUT_DIR of benchmarks/ssl_fashion.sh)

The model and data settings below are those of ssl_fashion.sh with its default sizes.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from trainlab.config.load import build_config
from trainlab.engine.assemble import load_data_and_model
from trainlab.engine.pretrained import load_encoder, load_pretrained

VIT = ("data.name=fashion-mnist model.name=vit_tiny model.patch_size=4 model.depth=6 "
       "model.dim=128 model.heads=4 model.pool=mean data.labels_fraction=0.34 "
       "data.val_fraction=0.02").split()


@torch.no_grad()
def features(data, model, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features [N, D] (as the probe sees them) and labels [N] of a whole split."""
    model = model.eval()
    feats, labels = [], []
    for x, y, _ in data.full_loader(split, 500).epoch(0):
        feats.append(model.forward_features(x).float())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def logistic_regression(xtr, ytr, xte, yte, l2: float = 1e-4) -> float:
    """Test accuracy of L2-regularized softmax regression fitted to convergence."""
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    w = torch.zeros(xtr.shape[1], int(ytr.max()) + 1, requires_grad=True)
    b = torch.zeros(w.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=1000, tolerance_grad=1e-6,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ w + b, ytr) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return ((xte @ w + b).argmax(1) == yte).float().mean().item()


def main(out: str) -> None:
    accs = {}
    for name, init in (("random", None), ("mae", f"{out}/mae_pretrain")):
        t0 = time.perf_counter()
        cfg = build_config(None, VIT + ([f"model.init={init}"] if init else []))
        pre = load_pretrained(init) if init else None
        data, model = load_data_and_model(cfg, pre.stats_for(cfg) if pre else None)
        if pre is not None:
            load_encoder(model, pre, cfg.model.name)
        xtr, ytr = features(data, model, "train")
        xte, yte = features(data, model, "test")
        accs[name] = logistic_regression(xtr, ytr, xte, yte)
        top = torch.linalg.svdvals(xtr - xtr.mean(0))
        print(f"{name}: {len(ytr)} train / {len(yte)} test images, top principal direction "
              f"{(top[0] ** 2 / (top ** 2).sum()).item():.0%} of the feature variance, "
              f"converged linear classifier test acc {accs[name]:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"converged probe: MAE - random = {100 * (accs['mae'] - accs['random']):+.2f} points")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ssl-bench")

"""SimCLR: the NT-Xent loss against a hand computation, negatives gathered across real gloo
processes, the on-device views, and short end-to-end runs with a CNN and a ViT."""

from __future__ import annotations

import json
import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import quick

from trainlab.config.load import build_config
from trainlab.engine.run import train
from trainlab.errors import ConfigError
from trainlab.methods import build_method
from trainlab.methods.simclr import CrossRankBatchNorm1d, nt_xent
from trainlab.methods.views import ViewSpec, apply_view, sample_view_params, two_views
from trainlab.models import ImageSpec, build_model

SIMCLR = ["method.name=simclr", "method.proj_hidden=32", "method.proj_dim=16"]


def test_nt_xent_equals_hand_computation():
    z1 = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    z2 = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    t = 0.5
    z = [(1.0, 0.0), (0.6, 0.8), (0.8, 0.6), (0.0, 1.0)]  # already unit length
    partner = {0: 2, 1: 3, 2: 0, 3: 1}

    def s(i, k):
        return z[i][0] * z[k][0] + z[i][1] * z[k][1]

    losses = []
    for i in range(4):
        denom = sum(math.exp(s(i, k) / t) for k in range(4) if k != i)
        losses.append(-math.log(math.exp(s(i, partner[i]) / t) / denom))
    loss, acc = nt_xent(3.0 * z1, 2.0 * z2, t)  # scale does not matter: cosine similarity
    assert loss.item() == pytest.approx(sum(losses) / 4, rel=1e-6)
    # anchor 0's partner (0.8, 0.6) beats (0.6, 0.8); anchor 1 (0.6, 0.8) prefers (0.8, 0.6)
    assert acc.item() == pytest.approx(0.5)


def test_nt_xent_is_low_for_matching_views_and_has_gradients():
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    good, acc = nt_xent(z, z + 0.01 * torch.randn_like(z), 0.1)
    bad, _ = nt_xent(z, torch.randn_like(z), 0.1)
    assert acc.item() == 1.0 and good.item() < bad.item()
    z1 = z.clone().requires_grad_(True)
    nt_xent(z1, torch.randn_like(z), 0.2)[0].backward()
    assert z1.grad is not None and z1.grad.abs().sum() > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)  # global batch
        lo, hi = rank * 3, rank * 3 + 3
        local1 = z1[lo:hi].clone().requires_grad_(True)
        loss, _ = nt_xent(local1, z2[lo:hi], 0.3)
        loss.backward()
        # reference: the single-process loss of these 6 anchors (views 1 and 2 of this rank's
        # images) against all 12 embeddings, i.e. negatives from every rank
        ref1 = z1.clone().requires_grad_(True)
        zz = torch.nn.functional.normalize(torch.cat([ref1, z2]), dim=1)
        logits = zz @ zz.T / 0.3
        logits.fill_diagonal_(float("-inf"))
        target = torch.cat([torch.arange(6) + 6, torch.arange(6)])
        rows = torch.cat([torch.arange(lo, hi), torch.arange(lo, hi) + 6])
        per = torch.nn.functional.cross_entropy(logits, target, reduction="none")  # [12]
        assert torch.allclose(loss, per[rows].mean(), atol=1e-6), (loss, per[rows].mean())
        # the local rows' gradient is that of the sum of both ranks' losses (as anchors, and as
        # candidates of every rank's anchors): DDP's average of it is the gradient of the
        # global mean loss, as in one process
        rank_rows = [torch.cat([torch.arange(r * 3, r * 3 + 3), torch.arange(r * 3, r * 3 + 3) + 6])
                     for r in range(world)]
        sum(per[r_rows].mean() for r_rows in rank_rows).backward()
        assert torch.allclose(local1.grad, ref1.grad[lo:hi], atol=1e-6)

        # cross-rank BatchNorm: this rank's rows of the output, their input gradients, the
        # summed weight gradients and the running statistics equal one BatchNorm1d over the
        # global batch
        x, w = torch.randn(6, 5, generator=g) * 3 + 1, torch.randn(6, 5, generator=g)
        ref_bn, bn = torch.nn.BatchNorm1d(5), CrossRankBatchNorm1d(5)
        for m in (ref_bn, bn):
            with torch.no_grad():
                m.weight.copy_(torch.linspace(0.5, 2, 5))
        xr, xl = x.clone().requires_grad_(True), x[lo:hi].clone().requires_grad_(True)
        ref_out, out = ref_bn(xr), bn(xl)
        (ref_out * w).sum().backward()
        (out * w[lo:hi]).sum().backward()
        assert torch.allclose(out, ref_out[lo:hi], atol=1e-5)
        assert torch.allclose(xl.grad, xr.grad[lo:hi], atol=1e-5)
        dist.all_reduce(bn.weight.grad)
        assert torch.allclose(bn.weight.grad, ref_bn.weight.grad, atol=1e-5)
        assert torch.allclose(bn.running_mean, ref_bn.running_mean, atol=1e-5)
        assert torch.allclose(bn.running_var, ref_bn.running_var, atol=1e-5)
    finally:
        dist.destroy_process_group()


def test_negatives_are_gathered_across_processes():
    mp.spawn(_rank_main, args=(2, _free_port()), nprocs=2, join=True)


def test_views_identity_flip_and_rng():
    x = torch.randn(3, 1, 8, 8)
    ident = torch.tensor([[1.0, 0.0, 0.3, -0.5, 0.0, 0.0, 1.0]]).repeat(3, 1)
    assert torch.allclose(apply_view(x, ident), x, atol=1e-5)  # full-size box: no crop
    flip = ident.clone()
    flip[:, 4] = 1
    assert torch.allclose(apply_view(x, flip), x.flip(3), atol=1e-5)
    jitter = ident.clone()
    jitter[:, 5], jitter[:, 6] = 0.5, 2.0
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(apply_view(x, jitter), (x - m) * 2 + m + 0.5, atol=1e-5)
    torch.manual_seed(3)
    a1, a2 = two_views(x, ViewSpec())
    torch.manual_seed(3)
    b1, b2 = two_views(x, ViewSpec())
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and not torch.allclose(a1, a2)
    p = sample_view_params(ViewSpec(), 1000, torch.device("cpu"))
    assert 0.2 <= p[:, 0].min() and p[:, 0].max() <= 1.0
    assert 0.4 < p[:, 4].mean() < 0.6  # flips about half


def test_ema_is_refused():
    cfg = build_config(None, [*SIMCLR, "train.ema_decay=0.99"])
    model = build_model(cfg.model, ImageSpec(1, 8, 8, 10))
    with pytest.raises(ConfigError, match="train.ema_decay"):
        build_method(cfg, model)


@pytest.mark.parametrize("model", ["cnn", "vit"])
def test_simclr_runs_on_digits(tmp_path, model):
    arch = {"cnn": ["model.name=cnn", "model.widths=[8,16]", "method.knn_every=1"],
            "vit": ["model.name=vit_tiny", "model.depth=2", "model.dim=32", "model.heads=2",
                    "model.patch_size=2"]}[model]
    s = train(build_config(None, quick(tmp_path, *SIMCLR, *arch, "train.epochs=1",
                                       "train.batch_size=128")))
    assert s["test_acc"] is None and math.isfinite(s["test_loss"])
    ck = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert "projector.0.weight" in ck["method"] and "projector.1.running_mean" in ck["method"]
    assert not any(k.startswith("projector") for k in ck["model"])
    ep = [json.loads(x) for x in (tmp_path / "metrics.jsonl").open()
          if json.loads(x)["kind"] == "epoch"][0]
    assert "val_loss" in ep and "train_contrast_acc" in ep
    if model == "cnn":  # the online kNN monitor
        assert 0.3 < ep["knn_acc"] <= 1.0
    else:
        assert "knn_acc" not in ep

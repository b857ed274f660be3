"""Randomness per sample, not per rank: batch keys from both loaders, `sample_uniform`, MAE masks
and SimCLR views that follow the sample across world sizes, and per-rank dropout seeds."""

from __future__ import annotations

import pytest
import torch
from conftest import quick

from trainlab.config.load import build_config
from trainlab.data.file_loader import FileLoader
from trainlab.data.keys import SampleKeys, contiguous_keys, rank_seed, sample_uniform
from trainlab.data.loader import DeviceLoader
from trainlab.dist.env import DistEnv
from trainlab.engine.assemble import assemble
from trainlab.methods import build_method
from trainlab.methods.mae import random_masking
from trainlab.models import ImageSpec, build_model

TINY_MAE = ["model.name=vit_tiny", "model.depth=2", "model.dim=32", "model.heads=2",
            "model.patch_size=2", "method.name=mae", "method.decoder_depth=1",
            "method.decoder_dim=32", "method.decoder_heads=2"]
SIMCLR = ["model.name=cnn", "model.widths=[8,16]", "method.name=simclr",
          "method.proj_hidden=32", "method.proj_dim=16"]
DIGITS = ImageSpec(channels=1, height=8, width=8, num_classes=10)
N, B = 40, 8  # images, global batch


def method(over: list[str]):
    cfg = build_config(None, over)
    torch.manual_seed(0)
    return build_method(cfg, build_model(cfg.model, DIGITS))


def loader(kind: str, rank: int = 0, world: int = 1, seed: int = 3):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (N, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(N) % 10
    cls = DeviceLoader if kind == "device" else FileLoader
    extra = {} if kind == "device" else {"num_workers": 0}
    return cls(x, y, B, [0.5], [0.25], shuffle=True, seed=seed, rank=rank, world_size=world,
               **extra)


def test_sample_uniform_depends_only_on_seed_epoch_position_stream():
    full = sample_uniform(contiguous_keys(5, 2, 0, 300), 16, 1)  # [300, 16]
    assert full.shape == (300, 16) and 0 <= full.min() and full.max() < 1
    assert abs(full.mean().item() - 0.5) < 0.02
    # any split of the positions, in any order, draws the same row for each position
    parts = [sample_uniform(contiguous_keys(5, 2, a, b), 16, 1)
             for a, b in [(0, 37), (37, 64), (64, 65), (65, 300)]]
    assert torch.equal(torch.cat(parts), full)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sample_uniform(SampleKeys(5, 2, perm), 16, 1), full[perm])
    # another seed, epoch or stream: other numbers in every row
    for seed, epoch, stream in [(6, 2, 1), (5, 3, 1), (5, 2, 2), (-5, 2, 1)]:
        other = sample_uniform(contiguous_keys(seed, epoch, 0, 300), 16, stream)
        assert not (other == full).all(dim=1).any(), (seed, epoch, stream)
    assert len({tuple(r.tolist()) for r in full}) == 300  # no two positions alike
    assert sample_uniform(contiguous_keys(5, 2, 7, 7), 16, 1).shape == (0, 16)


@pytest.mark.parametrize("kind", ["device", "file"])
def test_loaders_key_each_ranks_share_and_resume(kind):
    one = list(loader(kind).epoch(4))
    halves = [list(loader(kind, r, 2).epoch(4)) for r in (0, 1)]
    assert len(one) == N // B
    for i, (x, _, keys) in enumerate(one):
        assert (keys.seed, keys.epoch) == (3, 4)
        assert torch.equal(keys.positions, torch.arange(i * B, (i + 1) * B))
        k0, k1 = halves[0][i][2], halves[1][i][2]
        assert torch.equal(torch.cat([k0.positions, k1.positions]), keys.positions)
        assert torch.equal(torch.cat([halves[0][i][0], halves[1][i][0]]), x)
    resumed = list(loader(kind).epoch(4, start=3))
    assert [k.positions.tolist() for *_, k in resumed] == \
        [k.positions.tolist() for *_, k in one[3:]]


def test_mae_masks_follow_the_sample_not_the_rank():
    mae = method(TINY_MAE)

    def masks(batch):
        imgs, _, keys = batch
        tokens = torch.zeros(imgs.shape[0], 16, 1)
        return random_masking(tokens, mae.len_keep, mae._noise(imgs, keys))[1]  # [b, 16]

    one = [masks(b) for b in loader("device").epoch(1)]
    ranks = [[masks(b) for b in loader("device", r, 2).epoch(1)] for r in (0, 1)]
    for i, m in enumerate(one):
        m0, m1 = ranks[0][i], ranks[1][i]
        # sample i's mask does not depend on the world size ...
        assert torch.equal(torch.cat([m0, m1]), m)
        # ... and the two ranks mask their own samples differently (not row r == row r)
        assert not (m0 == m1).all(dim=1).any()
    assert len({tuple(r.tolist()) for m in one for r in m}) > N // 2  # masks vary per sample
    # another epoch: new masks; the same epoch again (a resume): the same masks
    other = [masks(b) for b in loader("device").epoch(2)]
    assert not any(torch.equal(a, b) for a, b in zip(one, other, strict=True))
    again = [masks(b) for b in loader("device").epoch(1, start=2)]
    assert all(torch.equal(a, b) for a, b in zip(one[2:], again, strict=True))


def test_mae_training_loss_uses_the_keys_not_the_global_rng():
    mae = method(TINY_MAE)
    batch = next(iter(loader("device").epoch(0)))
    torch.manual_seed(1)
    a = mae(batch)["loss"]
    torch.manual_seed(2)
    b = mae(batch)["loss"]
    assert a.item() == b.item()
    later = next(iter(loader("device").epoch(1)))
    assert mae((batch[0], batch[1], later[2]))["loss"].item() != a.item()
    # evaluation: fixed masks per position, whatever the training seed or epoch
    e1 = mae.evaluate(batch)["loss"]
    e2 = mae.evaluate((batch[0], batch[1], later[2].with_seed(99, 7)))["loss"]
    assert e1.item() == e2.item()


def test_simclr_views_follow_the_sample_not_the_rank():
    simclr = method(SIMCLR)

    def views(batch):
        return simclr.make_views(batch[0], batch[2])

    one = [views(b) for b in loader("file").epoch(0)]
    ranks = [[views(b) for b in loader("file", r, 2).epoch(0)] for r in (0, 1)]
    for i, (v1, v2) in enumerate(one):
        (a1, a2), (b1, b2) = ranks[0][i], ranks[1][i]
        torch.testing.assert_close(torch.cat([a1, b1]), v1, rtol=0, atol=1e-6)
        torch.testing.assert_close(torch.cat([a2, b2]), v2, rtol=0, atol=1e-6)
        assert not torch.allclose(v1, v2)  # two different views of each image
    # rank 0 and rank 1 augment the same image differently at the same batch row
    x = torch.randn(1, 1, 8, 8).repeat(4, 1, 1, 1)
    r0, r1 = contiguous_keys(3, 0, 0, 4), contiguous_keys(3, 0, 4, 8)
    for w0, w1 in zip(simclr.make_views(x, r0), simclr.make_views(x, r1), strict=True):
        assert not any(torch.allclose(w0[j], w1[j]) for j in range(4))


def test_dropout_generator_differs_per_rank_and_repeats(tmp_path, monkeypatch):
    """After assembly every rank has the same weights but its own global generator (dropout,
    drop-path), fixed by (run.seed, rank)."""
    monkeypatch.setattr("trainlab.engine.assemble.DDP", lambda m, **kw: m)  # no process group
    cfg = build_config(None, quick(tmp_path, "model.name=mlp", "model.dropout=0.5"))
    draws, weights = [], []
    for rank in (0, 1, 0):
        a = assemble(cfg, DistEnv(rank=rank, local_rank=rank, world_size=2),
                     torch.device("cpu"))
        draws.append(torch.rand(8))
        weights.append(a.model.state_dict())
    assert not torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k
    assert len({rank_seed(cfg.run.seed, r) for r in range(64)}) == 64

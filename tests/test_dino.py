"""DINO: centring and sharpening against a hand computation, the teacher's EMA and temperature
schedules, no gradients into the teacher, per-sample crops, exact resume (teacher, student,
heads and centre), no collapse on a tiny digits run, the teacher as the run's encoder
(`trainlab knn`, `model.init`), and the configs it refuses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import quick, stop_after_first_epoch

from trainlab.cli import main
from trainlab.config.load import build_config
from trainlab.data.keys import SampleKeys, contiguous_keys
from trainlab.dist.env import DistEnv
from trainlab.engine.assemble import assemble
from trainlab.engine.evaluate import extract_features
from trainlab.engine.pretrained import load_encoder, load_pretrained
from trainlab.engine.run import train
from trainlab.errors import ConfigError, Interrupted
from trainlab.methods import build_method
from trainlab.methods.dino import (
    DINO,
    dino_loss,
    teacher_momentum_at,
    teacher_temp_at,
    vit_features,
)
from trainlab.models import ImageSpec, build_model
from trainlab.optim.factory import build_optimizer

TINY_VIT = ["model.name=vit_tiny", "model.depth=2", "model.dim=32", "model.heads=2",
            "model.patch_size=2"]
TINY_DINO = [*TINY_VIT, "method.name=dino", "method.out_dim=256", "method.proj_hidden=64",
             "method.proj_dim=32"]
DIGITS = ImageSpec(channels=1, height=8, width=8, num_classes=10)


def tiny_dino(*extra: str) -> DINO:
    cfg = build_config(None, [*TINY_DINO, *extra])
    torch.manual_seed(0)
    return build_method(cfg, build_model(cfg.model, DIGITS))


def test_centering_and_sharpening_equal_hand_computation():
    # one image, K = 3 prototypes, 3 crops (2 global + 1 local)
    student = torch.tensor([[0.2, -0.1, 0.4],  # crop 0 (global)
                            [0.0, 0.3, -0.2],  # crop 1 (global)
                            [0.5, 0.1, 0.0]])  # crop 2 (local)
    teacher = torch.tensor([[0.3, 0.1, -0.2], [-0.1, 0.2, 0.4]])
    center = torch.tensor([[0.1, -0.05, 0.02]])
    ts, tt = 0.1, 0.04

    def softmax(v: list[float]) -> list[float]:
        e = [math.exp(a) for a in v]
        return [a / sum(e) for a in e]

    q = [softmax([(teacher[i, k].item() - center[0, k].item()) / tt for k in range(3)])
         for i in range(2)]
    p = [softmax([student[v, k].item() / ts for k in range(3)]) for v in range(3)]
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]  # (teacher crop, student crop), never the same
    hand = sum(-sum(q[i][k] * math.log(p[v][k]) for k in range(3)) for i, v in pairs) / 4
    loss, probs = dino_loss(student, teacher, center, ts, tt, n_crops=3)
    assert loss.item() == pytest.approx(hand, rel=1e-5)
    assert torch.allclose(probs, torch.tensor(q), atol=1e-6)
    # sharpening: a lower teacher temperature gives a peakier target; centring removes a
    # shift common to every prototype (softmax is shift-invariant), not a per-prototype one
    _, sharp = dino_loss(student, teacher, center, ts, tt / 4, n_crops=3)
    ent = lambda p: -(p * p.log()).sum(-1)  # noqa: E731
    assert (ent(sharp) < ent(probs)).all()
    _, shifted = dino_loss(student, teacher + 5.0, center + 5.0, ts, tt, n_crops=3)
    assert torch.allclose(shifted, probs, atol=1e-6)


def test_center_update_and_eval_leave_state_alone():
    m = tiny_dino("method.center_momentum=0.9")
    m.center.fill_(1.0)
    t = torch.randn(6, 256)
    m.update_center(t)
    assert torch.allclose(m.center, 0.9 * torch.ones(1, 256) + 0.1 * t.mean(0, keepdim=True))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.eval()
    m.evaluate((torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_teacher_gets_no_gradients_and_is_not_optimized():
    m = tiny_dino()
    m.train()
    out = m((torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long),
             contiguous_keys(1, 0, 0, 8)))
    out["loss"].backward()
    teacher = [*m.model.parameters(), *m.teacher_head.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in teacher)
    grads = [p.grad for n, p in m.student.named_parameters() if not n.startswith("head.")]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is not None for p in m.student_head.parameters())
    opt = build_optimizer(build_config(None, TINY_DINO).optim, m)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not in_opt & {id(p) for p in teacher}
    assert {id(p) for p in m.student_head.parameters()} <= in_opt
    assert not m.model.training and m.student.training  # the teacher never drops paths


def test_teacher_ema_and_temperature_schedules_by_hand():
    assert teacher_momentum_at(0, 100, 0.996) == pytest.approx(0.996)
    assert teacher_momentum_at(50, 100, 0.996) == pytest.approx(0.998)
    assert teacher_momentum_at(100, 100, 0.996) == pytest.approx(1.0)
    assert teacher_momentum_at(25, 100, 0.9) == pytest.approx(1 - 0.1 * (1 + math.cos(
        math.pi / 4)) / 2)
    assert teacher_temp_at(0, 10, 0.04, 0.07) == pytest.approx(0.04)
    assert teacher_temp_at(5, 10, 0.04, 0.07) == pytest.approx(0.055)
    assert teacher_temp_at(10, 10, 0.04, 0.07) == teacher_temp_at(99, 10, 0.04, 0.07) == 0.07
    assert teacher_temp_at(0, 0, 0.04, 0.07) == 0.07  # no warmup

    m = tiny_dino("method.teacher_momentum=0.9", "method.teacher_temp=0.07",
                  "method.warmup_teacher_temp=0.04", "method.warmup_teacher_temp_epochs=2",
                  "train.epochs=4")
    m.begin_step(5, steps_per_epoch=5, total_steps=20)  # half way through the 10-step warmup
    assert m.teacher_temp_now.item() == pytest.approx(0.055)
    with torch.no_grad():
        for p in [*m.student.parameters(), *m.student_head.parameters()]:
            p.add_(1.0)  # the student moved away from the teacher by 1 everywhere
    t0 = [p.clone() for p in [*m.model.parameters(), *m.teacher_head.parameters()]]
    s = [p.clone() for p in [*m.student.parameters(), *m.student_head.parameters()]]
    m.end_step(10, steps_per_epoch=5, total_steps=20)
    mom = 1 - 0.1 * (1 + math.cos(math.pi * 10 / 20)) / 2  # 0.95
    for a, b, p in zip(t0, s, [*m.model.parameters(), *m.teacher_head.parameters()],
                       strict=True):
        assert torch.allclose(p, mom * a + (1 - mom) * b, atol=1e-6)


def test_crops_follow_the_sample_and_local_crops_are_small():
    m = tiny_dino("method.local_crops=3")
    x = torch.randn(6, 1, 8, 8)
    keys = SampleKeys(3, 2, torch.arange(10, 16))
    g, loc = m.make_crops(x, keys)
    assert g.shape == (12, 1, 8, 8) and loc.shape == (18, 1, 4, 4)  # 4 = 3/7 of 8, 2x2 patches
    # the same samples on another rank, in another batch: the same crops
    g2, loc2 = m.make_crops(x[3:], SampleKeys(3, 2, torch.arange(13, 16)))
    assert torch.equal(g2[:3], g[3:6]) and torch.equal(loc2[:3], loc[3:6])
    assert not torch.equal(g[:6], g[6:])  # the two global crops differ
    feats = vit_features(m.student, loc)  # interpolated position embedding: any multiple of p
    assert feats.shape == (18, 32) and torch.isfinite(feats).all()


def _epochs(run: Path) -> list[dict]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").open()]
    return [r for r in recs if r["kind"] == "epoch"]


def test_dino_run_does_not_collapse_resumes_exactly_and_gives_the_teacher(tmp_path, monkeypatch,
                                                                          capsys):
    over = [*TINY_DINO, "train.epochs=2", "train.batch_size=64", "optim.lr=5e-4",
            "method.knn_every=2", "method.local_crops=2"]
    s = train(build_config(None, quick(tmp_path / "a", *over)))
    assert s["test_acc"] is None and math.isfinite(s["test_loss"])
    ck = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)
    vit = build_model(build_config(None, TINY_VIT).model, DIGITS)
    assert ck["model"].keys() == vit.state_dict().keys()  # "model" is the teacher's ViT
    meth = ck["method"]
    assert "center" in meth and meth["center"].abs().sum() > 0
    assert any(k.startswith("student.blocks.") for k in meth)
    assert any(k.startswith("teacher_head.") for k in meth)
    assert not torch.equal(ck["model"]["blocks.0.attn.qkv.weight"],
                           meth["student.blocks.0.attn.qkv.weight"])  # EMA lags the student

    # no collapse (measured: entropy ~2.0 of log 256 = 5.55, batch entropy ~4.5): the teacher's
    # targets neither went uniform nor to one prototype, and they depend on the image (a single
    # distribution for every image has entropy == batch entropy)
    last = _epochs(tmp_path / "a")[-1]
    assert last["train_teacher_entropy"] < math.log(256) - 0.5
    assert last["train_batch_entropy"] > last["train_teacher_entropy"] + 0.5
    assert "knn_acc" in _epochs(tmp_path / "a")[1]  # the monitor ran on the teacher
    cfg = build_config(None, TINY_VIT)
    torch.manual_seed(0)
    teacher = build_model(cfg.model, DIGITS)
    load_encoder(teacher, load_pretrained(str(tmp_path / "a")), cfg.model.name)
    assert torch.equal(teacher.state_dict()["blocks.1.mlp.fc1.weight"],
                       ck["model"]["blocks.1.mlp.fc1.weight"])  # model.init reads the teacher

    assert main(["knn", str(tmp_path / "a")]) == 0
    assert "test kNN accuracy" in capsys.readouterr().out

    # stop after epoch 1, resume: teacher, student, heads and centre end as in the straight run
    restore = stop_after_first_epoch(monkeypatch)
    with pytest.raises(Interrupted):
        train(build_config(None, quick(tmp_path / "b", *over)))
    restore()
    mid = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    cfg_b = build_config(None, quick(tmp_path / "b", *over))
    a = assemble(cfg_b, DistEnv(), torch.device("cpu"), mid, tmp_path / "b/checkpoints/last.pt")
    assert torch.equal(a.method.center, mid["method"]["center"])
    assert all(torch.equal(v, mid["model"][k]) for k, v in a.method.model.state_dict().items())
    assert torch.equal(a.method.teacher_head.prototypes, mid["method"]["teacher_head.prototypes"])
    # the teacher's features still tell the images apart at least half as well as at init
    # (a small random ViT's pooled features are nearly alike: per-dimension std ~0.006 of the
    # L2-normalized 32-d features; a collapsed encoder gives 0)
    val = a.data.full_loader("val", 512)
    torch.manual_seed(0)  # run.seed: the weights the run started from
    init = build_model(cfg_b.model, DIGITS)
    init_std = extract_features(init, val)[0].std(0).mean()
    assert extract_features(a.method.model, val)[0].std(0).mean() > 0.5 * init_std
    train(build_config(None, quick(tmp_path / "b", *over, "run.resume=auto")))
    cb = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    for part in ("model", "method"):
        assert ck[part].keys() == cb[part].keys()
        for k in ck[part]:
            assert torch.equal(ck[part][k], cb[part][k]), f"{part}.{k} differs"


@pytest.mark.parametrize("over, expect", [
    (["model.name=cnn"], ["method.name=dino", "Vision Transformer", "model.name=cnn"]),
    (["model.name=mlp"], ["method.name=dino", "model.name=mlp"]),
    (["method.local_crop_size=3"], ["method.local_crop_size=3", "multiple of model.patch_size"]),
    (["method.local_crop_size=10"], ["method.local_crop_size=10", "valid sizes: 2, 4, 6, 8"]),
    (["train.ema_decay=0.99"], ["train.ema_decay", "method.name=dino"]),
    (["method.warmup_teacher_temp_epochs=3", "train.epochs=2"],
     ["method.warmup_teacher_temp_epochs=3", "train.epochs=2"]),
    (["method.teacher_momentum=1"], ["method.teacher_momentum"]),
    (["method.local_crop_scale=[0.5, 0.1]"], ["method.local_crop_scale"]),
])
def test_bad_dino_configs(tmp_path, over, expect):
    with pytest.raises(ConfigError) as e:
        train(build_config(None, quick(tmp_path, *TINY_DINO, *over)))
    for s in expect:
        assert s in str(e.value), (s, str(e.value))
    assert not (tmp_path / "checkpoints").exists()

"""`trainlab report` (run and sweep pages, opened in a real headless Chromium), the numbers
behind them (confusion matrix, per-class scores, calibration, attention rollout), the report
at the end of training, and `trainlab runs`."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import CHROMIUM, open_page
from conftest import quick, stop_after_first_epoch
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import precision_recall_fscore_support

from trainlab.cli import main
from trainlab.engine import trainer as trainer_mod
from trainlab.engine.assemble import load_for_eval
from trainlab.engine.checkpoint import load_run
from trainlab.engine.knn import knn_eval
from trainlab.engine.predict import predict_split
from trainlab.launch import job
from trainlab.models.vit import VisionTransformer
from trainlab.report.attention import last_layer_cls, rollout
from trainlab.report.classify import calibration, confusion_matrix, most_confused, per_class

TINY_VIT = ["data.name=digits", "model.name=vit_tiny", "model.depth=2", "model.dim=48",
            "model.heads=3", "model.patch_size=2", "train.epochs=2", "run.log_every=5"]
RUN_SECTIONS = ("summary", "config", "curves", "confusion", "per-class", "confused-pairs",
                "misclassified", "calibration", "attention")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian chromium "
                                    "(make test installs it)")


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory) -> Path:
    """A finished tiny-ViT digits run; its report was written at the end of training."""
    d = tmp_path_factory.mktemp("runs") / "vit"
    assert main(["train", *quick(d, *TINY_VIT, "run.report=true")]) == 0
    return d


def _sections(dom: str) -> set[str]:
    return set(re.findall(r'<section id="([^"]+)"', dom))


@needs_chromium
def test_run_report_opens_in_chromium_with_every_section(vit_run, tmp_path):
    page = vit_run / "report.html"
    assert page.is_file()
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # nothing fetched from a network
    for png in sorted((vit_run / "plots").glob("*.png")):  # the same figures, also as PNGs
        assert base64.b64encode(png.read_bytes()).decode() in html, png.name
    opened = open_page(page, tmp_path / "run-report.png", height=5200)
    assert set(RUN_SECTIONS) <= _sections(opened.dom)
    assert len(opened.images) == 5  # curves, confusion, misclassified, reliability, attention
    assert all(done and w > 0 and h > 0 for _, done, w, h in opened.images), opened.images
    assert opened.errors == []
    assert "ECE" in opened.dom and "vit_tiny" in opened.dom


@needs_chromium
def test_sweep_report_opens_in_chromium_and_links_every_point(tmp_path):
    sweep = tmp_path / "sweep"
    assert main(["sweep", "--local", "--grid", "optim.lr=0.003,0.03", "--dir", str(sweep),
                 "data.name=digits", "model.name=mlp", "train.epochs=2", "run.progress=false",
                 "run.tensorboard=false"]) == 0
    assert main(["report", str(sweep)]) == 0
    opened = open_page(sweep / "report.html", tmp_path / "sweep-report.png", height=2000)
    assert {"overview", "points", "metric", "curves"} <= _sections(opened.dom)
    links = re.findall(r'<a href="([^"]+/report\.html)"', opened.dom)
    points = json.loads((sweep / "sweep.json").read_text())["points"]
    assert sorted(links) == sorted(f"{p['dir']}/report.html" for p in points)
    assert all((sweep / link).is_file() for link in links)
    assert len(re.findall(r"<tr><td", opened.dom.split('id="points-table"')[1])) == len(points)
    assert len(opened.images) == 2
    assert all(done and w > 0 and h > 0 for _, done, w, h in opened.images), opened.images
    assert opened.errors == []


def test_browser_check_sees_console_errors_and_broken_images(tmp_path):
    """The guard itself: a page with a script error and an undecodable image fails it."""
    if CHROMIUM is None:
        pytest.skip("needs chromium")
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><img alt='x' src='data:image/png;base64,AAAA'>"
                   "<script>undefinedThing.call()</script></body></html>")
    opened = open_page(bad, tmp_path / "bad.png", height=300)
    assert opened.images == [["x", True, 0, 0]]
    assert any("undefinedThing" in e for e in opened.errors)


def test_confusion_matrix_and_scores_equal_sklearn(vit_run):
    cfg, ckpt, p = load_run(vit_run)
    data, method = load_for_eval(cfg, ckpt, p)
    probs, labels = predict_split(method.model, data, "test")
    preds = probs.argmax(1)
    cm = confusion_matrix(labels, preds, data.num_classes)
    want = sk_confusion(labels.numpy(), preds.numpy(), labels=list(range(data.num_classes)))
    assert np.array_equal(cm.numpy(), want)
    p_, r_, f_, s_ = precision_recall_fscore_support(
        labels.numpy(), preds.numpy(), labels=list(range(data.num_classes)), zero_division=0)
    sc = per_class(cm)
    assert np.allclose(sc.precision.numpy(), p_) and np.allclose(sc.recall.numpy(), r_)
    assert np.allclose(sc.f1.numpy(), f_) and np.array_equal(sc.support.numpy(), s_)
    pairs = most_confused(cm, top=100)
    assert sum(n for _, _, n in pairs) == int((preds != labels).sum())
    assert [n for _, _, n in pairs] == sorted((n for _, _, n in pairs), reverse=True)
    # ECE by hand: 15 equal bins of the max probability
    conf = probs.max(1).values.double().numpy()
    right = (preds == labels).numpy()
    ece = 0.0
    for lo in np.linspace(0, 1, 16)[:-1]:
        hi = lo + 1 / 15
        sel = (conf >= lo) & ((conf < hi) if hi < 1 - 1e-9 else (conf <= 1))
        if sel.any():
            ece += sel.mean() * abs(right[sel].mean() - conf[sel].mean())
    assert calibration(probs, labels).ece == pytest.approx(ece, abs=1e-9)


@torch.no_grad()
def test_attention_rollout_matches_a_hand_computation():
    torch.manual_seed(0)
    vit = VisionTransformer((4, 4), 2, 1, 3, dim=8, depth=2, heads=2).eval()
    x = torch.randn(2, 1, 4, 4)
    maps = vit.attention_maps(x)
    assert [m.shape for m in maps] == [torch.Size([2, 2, 5, 5])] * 2
    # by hand: per block, LN -> qkv -> softmax(q k^T / sqrt(d)) per head, then the block
    tokens = vit.prepend_cls(vit.embed_patches(x))
    hand = []
    for blk in vit.blocks:
        h = torch.nn.functional.layer_norm(tokens, (8,), blk.norm1.weight, blk.norm1.bias)
        qkv = h @ blk.attn.qkv.weight.T + blk.attn.qkv.bias  # [B, 5, 24]
        q, k = qkv[..., :8], qkv[..., 8:16]
        a = torch.stack([torch.softmax(q[..., i * 4:(i + 1) * 4] @ k[..., i * 4:(i + 1) * 4]
                                       .transpose(1, 2) / 2.0, dim=-1) for i in range(2)], 1)
        hand.append(a)
        tokens = blk(tokens)
    for m, a in zip(maps, hand, strict=True):
        assert torch.allclose(m, a, atol=1e-6)
    for b in range(2):  # rollout: (mean over heads + I), rows renormalized, multiplied
        r = np.eye(5)
        for a in hand:
            layer = a[b].mean(0).double().numpy() + np.eye(5)
            r = (layer / layer.sum(1, keepdims=True)) @ r
        want = r[0, 1:] / r[0, 1:].sum()
        assert np.allclose(rollout(maps)[b].numpy(), want, atol=1e-6)
        last = hand[-1][b].mean(0)[0, 1:]
        assert torch.allclose(last_layer_cls(maps)[b], last / last.sum(), atol=1e-6)


def test_report_at_end_of_training_can_be_off_and_never_fails_the_run(tmp_path, monkeypatch,
                                                                       capsys):
    mlp = ["data.name=digits", "model.name=mlp", "train.epochs=1"]
    assert main(["train", *quick(tmp_path / "on", *mlp, "run.report=true")]) == 0
    assert (tmp_path / "on" / "report.html").is_file()
    assert main(["train", *quick(tmp_path / "off", *mlp, "run.report=false")]) == 0
    assert not (tmp_path / "off" / "report.html").exists()

    def broken(run_dir):
        raise RuntimeError("disk full")

    monkeypatch.setattr(job, "write_run_report", broken)
    capsys.readouterr()
    assert main(["train", *quick(tmp_path / "broken", *mlp, "run.report=true")]) == 0
    err = capsys.readouterr().err
    assert "trainlab: warning:" in err and "disk full" in err
    assert (tmp_path / "broken" / "summary.json").is_file()


def test_report_of_a_folder_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainlab: error:") and str(tmp_path) in err and "Traceback" not in err


def test_runs_lists_status_from_the_files(vit_run, tmp_path, monkeypatch, capsys):
    root = tmp_path / "runs"
    shutil.copytree(vit_run, root / "done")
    mlp = ["data.name=digits", "model.name=mlp", "train.epochs=3"]
    restore = stop_after_first_epoch(monkeypatch)
    assert main(["train", *quick(root / "stopped", *mlp)]) != 0
    restore()
    def crash(self, *a, **kw):
        raise RuntimeError("boom")

    monkeypatch.setattr(trainer_mod.Trainer, "_end_epoch", crash)
    with pytest.raises(RuntimeError):
        main(["train", *quick(root / "crashed", *mlp)])
    capsys.readouterr()
    assert main(["runs", str(root), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {n: r["status"] for n, r in rows.items()} == {
        "done": "finished", "stopped": "interrupted", "crashed": "failed"}
    assert rows["done"]["model"] == "vit_tiny" and rows["done"]["epochs_done"] == 2
    assert rows["stopped"]["epochs_done"] == 1 and rows["stopped"]["epochs_total"] == 3
    assert main(["runs", str(root), "--sort", "best_val"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["name", "status", "model"] and len(table) == 4
    assert main(["runs", str(root), "--sort", "nonsense"]) == 2


@pytest.mark.slow
def test_pretraining_report_shows_knn_probe_and_reconstructions(tmp_path):
    run = tmp_path / "mae"
    assert main(["train", *quick(run, *TINY_VIT[:-2], "method.name=mae", "train.epochs=1",
                                 "run.report=true")]) == 0
    html = (run / "report.html").read_text()
    assert {"summary", "config", "curves", "ssl", "reconstructions"} <= _sections(html)
    assert "confusion" not in _sections(html)  # no classes to confuse
    assert (run / "plots" / "mae.png").is_file()
    knn = knn_eval(run)["knn_acc"]  # the page's kNN number is `trainlab knn`'s
    assert f"{100 * knn:.2f}%" in html

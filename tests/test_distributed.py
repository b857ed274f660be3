"""Distributed data parallel on the CPU with gloo, in real processes (torchrun and by hand)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, quick, wait_for_train_records

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", "-m", "trainlab", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=ENV)


def shown(p: subprocess.CompletedProcess) -> str:
    """What a failed launch printed: the start of stderr (each rank's own messages come before
    torchrun's summary) and its end."""
    err = p.stderr
    return err if len(err) <= 8000 else f"{err[:4000]}\n[...]\n{err[-4000:]}"


def single(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainlab", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=ENV)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("augment", ["false", "true"])
def test_two_gloo_processes_match_one_process(tmp_path, augment):
    """Global batch 64 on 2 ranks == batch 64 in 1 process: each rank takes half of the same
    positions, with the same per-sample augmentation, and DDP averages the gradients. Equal up
    to float reduction order: rtol 1e-4, atol 1e-5 after an epoch of AdamW."""
    over = ["train", "model.name=mlp", "train.epochs=1", "train.batch_size=64",
            f"data.augment={augment}", "model.dropout=0"]
    p2 = torchrun(*over, *quick(tmp_path / "two"))
    assert p2.returncode == 0, shown(p2)
    p1 = single(*over, *quick(tmp_path / "one"))
    assert p1.returncode == 0, shown(p1)
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    s1 = json.loads((tmp_path / "one/summary.json").read_text())
    s2 = json.loads((tmp_path / "two/summary.json").read_text())
    assert s2["world_size"] == 2 and s1["steps"] == s2["steps"]
    # only rank 0 wrote: one header line, no files from rank 1
    assert p2.stdout.count("run dir") == 1
    # 2-rank evaluation counts every one of the 359 test images once (odd split, 2 ranks):
    # the same weights evaluated in one process give exactly the same accuracy
    ev = single("eval", str(tmp_path / "two"))
    assert ev.returncode == 0, ev.stderr
    assert f"test accuracy {s2['test_acc']:.4f}" in ev.stdout


TINY_VIT = ["model.name=vit_tiny", "model.depth=2", "model.dim=32", "model.heads=2",
            "model.patch_size=2", "model.drop_path=0", "model.dropout=0"]
SSL = {
    "mae": [*TINY_VIT, "method.name=mae", "method.decoder_depth=1", "method.decoder_dim=32",
            "method.decoder_heads=2"],
    # BatchNorm statistics must span both ranks: a ViT backbone (no BatchNorm) and sync_bn for
    # the projection head's BatchNorm (SyncBatchNorm itself needs an accelerator; the head's
    # cross-rank BatchNorm also runs on the CPU). Mean pooling: the cls token of a fresh ViT
    # barely varies between images, and BatchNorm over such features magnifies float rounding
    # (~1e-4 of the gradient in float32 against float64, for 1 process as for 2).
    "simclr": [*TINY_VIT, "model.pool=mean", "method.name=simclr", "method.proj_hidden=32",
               "method.proj_dim=16", "train.sync_bn=true"],
}


ATOL = {"mae": 1e-5, "simclr": 1e-2}


@pytest.mark.parametrize("name", sorted(SSL))
def test_two_gloo_processes_match_one_process_ssl(tmp_path, name):
    """MAE masks and SimCLR views follow the sample (seed, epoch, position), not the rank: a
    2-rank run of global batch 64 ends with the same encoder and method heads as 1 process,
    up to float reduction order: MAE within the supervised test's tolerance; SimCLR within
    atol 1e-2, because BatchNorm over barely varying features and the contrastive loss amplify
    rounding. On a machine with AVX2 (FMA kernels; per-rank batches of 32 against 64 change the
    blocking) SimCLR's 2-rank and 1-process weights differ by up to 4.9e-3 (projector) after one
    epoch with OMP_NUM_THREADS=1, the same in every run; one process with 1 thread against 2
    threads differs by 3e-4. On the first build machine (no AVX2) all stayed below 1e-5. A
    weak check for SimCLR on such machines, an open item: see the closing note of 2026-12-01.

    SGD, not AdamW: some weights have an exactly zero gradient in exact arithmetic (the
    attention key bias; with SimCLR also the biases just before a BatchNorm, and the last
    LayerNorm's bias), and AdamW turns their float noise into steps of size lr."""
    over = ["train", *SSL[name], "train.epochs=1", "train.batch_size=64", "optim.name=sgd",
            "optim.lr=0.05"]
    p2 = torchrun(*over, *quick(tmp_path / "two"))
    assert p2.returncode == 0, shown(p2)
    p1 = single(*over, *quick(tmp_path / "one"))
    assert p1.returncode == 0, shown(p1)
    a = torch.load(tmp_path / "one/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "two/checkpoints/last.pt", weights_only=True)
    assert a["state"]["step"] == b["state"]["step"] > 10
    for part in ("model", "method"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=1e-4, atol=ATOL[name],
                                       msg=lambda m, k=k, part=part: f"{part}.{k}: {m}")
    # evaluation masks are fixed per image, so MAE's test loss agrees too (SimCLR's evaluation
    # takes its negatives from each rank's own batch: its loss depends on the world size)
    if name == "mae":
        s1 = json.loads((tmp_path / "one/summary.json").read_text())
        s2 = json.loads((tmp_path / "two/summary.json").read_text())
        assert s2["test_loss"] == pytest.approx(s1["test_loss"], rel=1e-4)


def test_batch_must_divide_by_world_size(tmp_path):
    p = torchrun("train", *quick(tmp_path, "model.name=mlp", "train.batch_size=63"))
    assert p.returncode != 0
    assert "train.batch_size=63" in p.stderr and "multiple of 2" in p.stderr
    # torchrun prints its own report of failed workers; trainlab's ranks print no traceback
    assert "trainlab/engine" not in p.stderr and "trainlab/cli" not in p.stderr


def test_sigterm_to_torchrun_then_resume_is_exact(tmp_path):
    over = ["train", "model.name=mlp", "train.epochs=2", "train.batch_size=16", "run.log_every=1",
            "model.dropout=0.1"]
    straight = torchrun(*over, *quick(tmp_path / "a"))
    assert straight.returncode == 0, shown(straight)
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "trainlab", *over,
           *quick(tmp_path / "b")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    wait_for_train_records([proc], tmp_path / "b" / "metrics.jsonl", 5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode != 0
    ck = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    assert ck["state"]["step"] >= 5 and len(ck["rng"]) == 2, err[-2000:]
    resumed = torchrun(*over, *quick(tmp_path / "b"), "run.resume=auto")
    assert resumed.returncode == 0, shown(resumed)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_killed_rank_ends_the_other_with_a_message(tmp_path):
    """Kill -9 one of two ranks mid-training: the survivor exits within the timeout, naming
    the rank that failed, instead of hanging in a collective."""
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        cmd = [sys.executable, "-m", "trainlab", "train",
               *quick(tmp_path, "model.name=mlp", "train.epochs=50", "train.batch_size=16",
                      "run.log_every=1", "run.dist_timeout_s=10")]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    wait_for_train_records(procs, tmp_path / "metrics.jsonl", 3)
    procs[1].kill()
    # the survivor ends on its own (the watchdog: run.dist_timeout_s=10 plus heartbeats);
    # the generous limit only turns a hang into a loud failure
    _, err = procs[0].communicate(timeout=900)
    procs[1].communicate()
    assert procs[0].returncode != 0
    assert "rank 1 " in err and "Traceback" not in err.split("rank 1")[-1], err[-3000:]
    assert "failed" in err or "stopped responding" in err, err[-3000:]


def test_bf16_autocast_on_cpu_trains(tmp_path):
    from trainlab.config.load import build_config
    from trainlab.engine.run import train

    s = train(build_config(None, quick(tmp_path, "train.precision=bf16", "train.epochs=4")))
    assert s["test_acc"] > 0.8


def test_compile_on_off_checkpoints_have_identical_keys(tmp_path):
    from trainlab.config.load import build_config
    from trainlab.engine.run import train

    over = ["model.name=mlp", "train.epochs=1"]
    train(build_config(None, quick(tmp_path / "plain", *over)))
    train(build_config(None, quick(tmp_path / "compiled", *over, "train.compile=true")))
    a = torch.load(tmp_path / "plain/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "compiled/checkpoints/last.pt", weights_only=True)
    assert list(a["model"]) == list(b["model"])
    assert not any("_orig_mod" in k or "module." in k for k in b["model"])


def test_ema_is_evaluated_and_checkpointed(tmp_path):
    from trainlab.config.load import build_config
    from trainlab.engine.run import train

    s = train(build_config(None, quick(tmp_path, "train.ema_decay=0.9", "train.epochs=3")))
    ck = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert set(ck["ema"]) == set(ck["model"])
    assert not torch.equal(ck["ema"]["head.weight"], ck["model"]["head.weight"])
    assert 0 <= s["test_ema_acc"] <= 1
    epochs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").open()
              if '"epoch"' in x and '"kind": "epoch"' in x]
    assert all("val_ema_acc" in r for r in epochs)

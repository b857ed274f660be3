"""End-to-end training on the real UCI digits: accuracy, files, eval, exact resume, signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, quick, stop_after_first_epoch, wait_for_train_records

from trainlab.config.load import build_config
from trainlab.engine.run import evaluate_run, train
from trainlab.engine.trainer import Interrupted


def weights(run_dir, name="last.pt"):
    return torch.load(run_dir / "checkpoints" / name, weights_only=True)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_default_digits_run(tmp_path):
    s = train(build_config(None, quick(tmp_path, "run.tensorboard=true", "run.log_every=5")))
    assert s["test_acc"] >= 0.9
    assert 0 <= s["best_val_acc"] <= 1 and s["final_val_acc"] is not None
    for k in ("best_val_acc", "final_val_acc", "test_acc", "epochs", "steps", "wall_s", "params"):
        assert k in s
    for f in ("config.yaml", "metrics.jsonl", "metrics.csv", "summary.json", "data.json",
              "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (tmp_path / f).is_file(), f
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + s["epochs"] and rows[0].startswith("epoch,step,lr")
    kinds = {json.loads(line)["kind"] for line in (tmp_path / "metrics.jsonl").open()}
    assert kinds == {"train", "epoch", "test"}
    # eval reproduces the test accuracy of the summary, from the run dir or the checkpoint
    res = evaluate_run(tmp_path)
    assert res["acc"] == pytest.approx(s["test_acc"], abs=1e-9)
    assert res["n"] == 359


@pytest.mark.parametrize("model", ["mlp", "resnet18", "vit_tiny"])
def test_zoo_trains_on_digits(tmp_path, model):
    extra = {"mlp": ["train.epochs=8"],
             "resnet18": ["train.epochs=2", "optim.lr=1e-3"],
             "vit_tiny": ["model.patch_size=2", "model.depth=2", "model.dim=64", "model.heads=4",
                          "train.epochs=15", "data.augment=false"]}[model]
    s = train(build_config(None, quick(tmp_path, f"model.name={model}", *extra)))
    assert s["test_acc"] > {"mlp": 0.9, "resnet18": 0.5, "vit_tiny": 0.8}[model]


def test_exact_resume_bit_for_bit(tmp_path, monkeypatch):
    over = ["train.epochs=3", "model.dropout=0.2", "train.accum_steps=2", "train.grad_clip=1.0",
            "train.ema_decay=0.99"]
    straight = train(build_config(None, quick(tmp_path / "a", *over)))

    # stop the second run right after epoch 1 as if it had been killed, then resume
    restore = stop_after_first_epoch(monkeypatch)
    with pytest.raises(Interrupted):
        train(build_config(None, quick(tmp_path / "b", *over)))
    restore()
    ck = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    assert ck["state"]["epoch"] == 1 and ck["state"]["batch"] == 0
    resumed = train(build_config(None, quick(tmp_path / "b", *over, "run.resume=auto")))
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    ema_a, ema_b = (torch.load(tmp_path / d / "checkpoints/last.pt", weights_only=True)["ema"]
                    for d in ("a", "b"))
    assert_same_weights(ema_a, ema_b)  # the EMA warmup depends on the step only
    assert resumed["steps"] == straight["steps"]
    assert resumed["test_acc"] == straight["test_acc"]
    # metrics of the resumed run hold each epoch once
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "b/metrics.jsonl").open()
              if json.loads(x)["kind"] == "epoch"]
    assert epochs == [1, 2, 3]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_epoch_then_resume_matches(tmp_path, sig):
    """A real process gets SIGINT/SIGTERM mid-epoch, saves, exits; `run.resume=auto` finishes
    with exactly the weights of an uninterrupted run."""
    over = ["model.name=mlp", "train.epochs=2", "train.batch_size=16", "run.log_every=1"]
    args = ["train", *quick(tmp_path / "a", *over)]
    subprocess.run([sys.executable, "-m", "trainlab", *args], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    b_args = ["train", *quick(tmp_path / "b", *over)]
    proc = subprocess.Popen([sys.executable, "-m", "trainlab", *b_args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_train_records([proc], tmp_path / "b" / "metrics.jsonl", 3)  # a few steps in
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and "run.resume=auto" in err
    st = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)["state"]
    # wherever the signal landed (mid-epoch, normally epoch 1), the checkpoint says so
    assert st["step"] >= 3 and st["epoch"] < 2, st
    assert st["batch"] > 0 or st["epoch"] == 1, st
    assert f"(epoch {st['epoch'] + 1}, batch {st['batch']})" in err, err
    subprocess.run([sys.executable, "-m", "trainlab", *b_args, "run.resume=auto"], cwd=ROOT,
                   check=True, capture_output=True, timeout=300)
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    sa = json.loads((tmp_path / "a/summary.json").read_text())
    sb = json.loads((tmp_path / "b/summary.json").read_text())
    assert sa["test_acc"] == sb["test_acc"] and sa["steps"] == sb["steps"]


def test_seed_makes_runs_repeatable(tmp_path):
    over = ["model.name=mlp", "train.epochs=1"]
    train(build_config(None, quick(tmp_path / "a", *over)))
    train(build_config(None, quick(tmp_path / "b", *over)))
    train(build_config(None, quick(tmp_path / "c", *over, "run.seed=1")))
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert not torch.equal(weights(tmp_path / "a")["head.weight"],
                           weights(tmp_path / "c")["head.weight"])


def test_accumulation_counts_optimizer_steps_and_matches_big_batch(tmp_path):
    """batch 32 x accum 2 sees the same samples per step as batch 64 and takes the same number
    of optimizer steps; without BN or dropout the weights agree to float tolerance."""
    over = ["model.name=mlp", "train.epochs=2", "data.augment=false", "optim.name=sgd",
            "optim.weight_decay=0"]
    big = train(build_config(None, quick(tmp_path / "a", *over, "train.batch_size=64")))
    acc = train(build_config(None, quick(tmp_path / "b", *over, "train.batch_size=32",
                                         "train.accum_steps=2")))
    n_train = 1294  # digits minus 20% test minus 10% val
    assert big["steps"] == acc["steps"] == 2 * (n_train // 64)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    # an odd number of micro-batches: the last optimizer step of each epoch takes one
    odd = train(build_config(None, quick(tmp_path / "c", *over, "train.batch_size=64",
                                         "train.accum_steps=3", "train.epochs=1")))
    assert odd["steps"] == -(-(n_train // 64) // 3)


def test_resume_auto_without_run_dir_finds_the_unfinished_run(tmp_path, monkeypatch):
    """Rerunning the same command with run.resume=auto continues the default-named run dir."""
    monkeypatch.chdir(tmp_path)
    over = ["run.progress=false", "run.tensorboard=false", "model.name=mlp", "train.epochs=2"]
    restore = stop_after_first_epoch(monkeypatch)
    with pytest.raises(Interrupted):
        train(build_config(None, over))
    restore()
    (first,) = list((tmp_path / "runs").glob("default-*"))
    s = train(build_config(None, over + ["run.resume=auto"]))
    assert s["run_dir"] == str(Path("runs") / first.name) and s["epochs"] == 2
    assert (first / "summary.json").is_file()
    assert len(list((tmp_path / "runs").glob("default-*"))) == 1
    # a different config does not continue that run: it starts a new one
    other = train(build_config(None, over + ["run.resume=auto", "run.seed=5"]))
    assert other["run_dir"] != s["run_dir"]

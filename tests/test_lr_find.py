"""`trainlab lr-find`: a real range test on digits through the Trainer, and its math."""

from __future__ import annotations

import csv
import json
import math
import shlex

import numpy as np
import pytest
from conftest import run_cli

from trainlab import cli
from trainlab.config.load import parse_override
from trainlab.launch.lr_find import (
    ExpSchedule,
    round2,
    smooth,
    stop_index,
    suggest,
    sweep_command,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["model.name=mlp", "model.hidden=[64]", "run.progress=false"]


def test_lr_find_on_digits(tmp_path, capsys):
    start, end, steps = 1e-4, 10.0, 60
    out = tmp_path / "lrf"
    assert cli.main(["lr-find", *FAST, "optim.lr=0.5", "--start", str(start), "--end",
                     str(end), "--steps", str(steps), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "lr_find.json").read_text())
    with open(out / "lr_find.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # one row per lr tried, fewer only when the 4x / nan rule stopped it
    assert 20 <= len(rows) <= steps and res["steps_used"] == len(rows)
    assert (len(rows) == steps) == (res["ended"] == "completed")
    assert [int(r["step"]) for r in rows] == list(range(len(rows)))
    lrs = np.array([float(r["lr"]) for r in rows])
    want = start * (end / start) ** (np.arange(len(rows)) / (steps - 1))
    np.testing.assert_allclose(lrs, want, rtol=1e-5)  # exponential from --start
    np.testing.assert_allclose(
        [float(r["smoothed"]) for r in rows], smooth([float(r["loss"]) for r in rows]),
        rtol=1e-5)
    # the off-by-one: row k = lr of update k (logged by the Trainer with step k + 1) and the
    # loss of the batch after that update (the train record of step k + 2)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r for r in recs if r["kind"] == "train"}
    assert set(train) == set(range(1, steps + 2))  # log_every=1, max_steps = steps + 1
    for k in (0, 7, len(rows) - 1):
        assert float(rows[k]["lr"]) == pytest.approx(train[k + 1]["lr"], rel=1e-5)
        assert float(rows[k]["loss"]) == pytest.approx(train[k + 2]["loss"], rel=1e-5)
    assert not (out / "checkpoints").exists()
    # the suggestion: inside the range, below the minimum; the loss fell on the way there
    lr, min_lr = res["suggested_lr"], res["min_loss_lr"]
    assert start <= lr < min_lr <= end
    assert res["min_loss_lr_div10"] == pytest.approx(min_lr / 10)
    smoothed = [float(r["smoothed"]) for r in rows]
    assert res["min_smoothed_loss"] < smoothed[0] - 0.05
    assert (out / "lr_find.png").read_bytes().startswith(PNG_MAGIC)
    # printed: the suggestion and a sweep command the sweep parser reads
    assert f"suggested lr {lr:.2g}" in printed
    line = next(s.strip() for s in printed.splitlines() if s.strip().startswith("trainlab sweep"))
    assert line == res["sweep_command"]
    argv = shlex.split(line)
    assert "optim.lr=0.5" not in argv and "model.hidden=[64]" in argv
    ns = cli.build_parser().parse_args(argv[1:])
    assert ns.command == "sweep" and ns.args == FAST
    key, values = ns.grid[0].split("=", 1)
    grid = [parse_override(f"{key}={v}")[1] for v in values.split(",")]
    assert key == "optim.lr" and all(isinstance(v, float) for v in grid)
    assert grid == res["grid"] and grid[1] == float(f"{lr:.2g}")
    assert grid[0] == pytest.approx(lr / 3, rel=0.05) and grid[2] == pytest.approx(lr * 3,
                                                                                  rel=0.05)


def test_nan_loss_ends_the_test_not_the_command(tmp_path, capsys):
    """SGD up to lr 1e8 overflows: the Trainer raises TrainingDiverged; lr-find keeps the
    steps before it and still suggests."""
    out = tmp_path / "lrf"
    assert cli.main(["lr-find", *FAST, "optim.name=sgd", "train.batch_size=256", "--steps",
                     "30", "--start", "1e-2", "--end", "1e8", "--out", str(out)]) == 0
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in recs if r["kind"] == "train"]) < 31  # stopped before max_steps
    res = json.loads((out / "lr_find.json").read_text())
    assert 3 <= res["steps_used"] < 30 and res["ended"] != "completed"
    assert res["suggested_lr"] is None or res["suggested_lr"] < res["min_loss_lr"]
    assert (out / "lr_find.png").is_file() and "steps used" in capsys.readouterr().out


def test_bad_range_is_a_clean_error(tmp_path, capsys):
    for args in (["--steps", "3"], ["--start", "0"], ["--start", "1", "--end", "0.1"]):
        assert cli.main(["lr-find", *FAST, *args, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert "lr-find needs 0 < --start < --end and --steps >= 5" in err
    assert not (tmp_path / "x").exists()


def test_cli_process_default_out(tmp_path):
    r = run_cli("lr-find", *FAST, "train.batch_size=256", "--steps", "8", "--start", "1e-3",
                "--end", "1e-1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (out,) = (tmp_path / "runs").glob("lr-find-default-*")
    assert {"lr_find.csv", "lr_find.json", "lr_find.png", "config.yaml"} <= {
        p.name for p in out.iterdir()}
    assert f"data {out.relative_to(tmp_path) / 'lr_find.csv'}" in r.stdout


def test_distributed_env_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["lr-find", *FAST, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "rank 1 of 2" in err and "one process" in err
    assert not (tmp_path / "x").exists()


def test_suggestion_is_steepest_descent_below_the_minimum():
    x = np.linspace(-6, 1, 141)  # log10(lr), 20 points per decade
    lrs = 10.0 ** x
    # a drop centred at 1e-3 (slope -2 per decade), the minimum near 1e-2, a bump, then an
    # even steeper drop at ~0.3 that stays above the minimum, then the blow-up
    loss = 2.0 - 0.5 * np.tanh(4 * (x + 3))
    loss += 0.6 * np.exp(-((x + 0.8) / 0.15) ** 2) * (x < -0.5)
    loss += 0.2 * (x >= -0.5) + 2.0 * np.clip(x + 0.4, 0, None) ** 2
    i_min = int(np.argmin(loss))
    lr, min_lr = suggest(list(lrs), list(loss))
    assert min_lr == lrs[i_min] and -2.5 < math.log10(min_lr) < -1
    assert math.log10(lr) == pytest.approx(-3.0, abs=0.06)  # within a grid step of 1e-3
    # the loss never falls: no suggestion
    rising = list(1.0 + 0.1 * (x + 6))
    assert suggest(list(lrs), rising) == (None, lrs[0])


def test_smoothing_is_bias_corrected():
    beta = 0.98
    assert smooth([2.5] * 50) == pytest.approx([2.5] * 50)  # no start-up bias towards 0
    a, b, c = 3.0, 1.0, 2.0
    s = smooth([a, b, c])
    assert s[0] == a
    assert s[1] == pytest.approx((beta * (1 - beta) * a + (1 - beta) * b) / (1 - beta ** 2))
    avg = beta * (beta * (1 - beta) * a + (1 - beta) * b) + (1 - beta) * c
    assert s[2] == pytest.approx(avg / (1 - beta ** 3))
    assert math.isnan(smooth([1.0, float("nan"), 1.0])[2])


def test_stop_rule_and_schedule_and_rounding():
    assert stop_index([1.0, 0.5, 0.4, 1.5, 1.7, 0.3]) == 5  # 1.7 > 4 x 0.4: kept, then stop
    assert stop_index([1.0, 0.9, float("nan"), 0.5]) == 2  # the nan and after: dropped
    assert stop_index([1.0, 0.9, 0.8]) == 3
    sched = ExpSchedule(1e-6, 1.0, 61)
    assert sched(0) == pytest.approx(1e-6) and sched(60) == pytest.approx(1.0)
    assert sched(30) == pytest.approx(1e-3) and sched(99) == pytest.approx(1.0)
    assert [round2(v) for v in (0.01234, 1e-5, 3.33e-5, 2.0)] == ["0.012", "1.0e-05",
                                                                  "3.3e-05", "2.0"]
    grid, cmd = sweep_command("recipes/digits_cnn.yaml", ["run.dir=x", "optim.lr=1", "a.b=c d"],
                              3e-3)
    assert grid == ["0.001", "0.003", "0.009"]
    assert cmd == ("trainlab sweep recipes/digits_cnn.yaml 'a.b=c d' "
                   "--grid optim.lr=0.001,0.003,0.009")

"""`trainlab sweep --local --parallel N`: points trained at once as child processes, the CPUs
divided between them, a signal forwarded so every point checkpoints, the same command
continuing. Real processes; waits on files, never on sleeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from conftest import ROOT, run_cli, wait_for_train_records

from trainlab import cli

BASE = ["sweep", "model.name=mlp", "run.tensorboard=false", "run.report=false",
        "--grid", "optim.lr=1e-3,1e-2", "--local"]


def test_parallel_needs_local_and_a_positive_count(capsys):
    assert cli.main(["sweep", "--grid", "optim.lr=1e-3,1e-2", "--parallel", "2"]) == 2
    assert "needs --local" in capsys.readouterr().err
    assert cli.main(["sweep", "--grid", "optim.lr=1e-3,1e-2", "--local", "--parallel=0"]) == 2
    assert "--parallel must be at least 1" in capsys.readouterr().err


def test_parallel_points_train_at_once_with_divided_threads(tmp_path):
    sweep = tmp_path / "s"
    args = [*BASE, "train.epochs=1", f"--dir={sweep}", "--parallel", "2"]
    r = run_cli(*args, env={"OMP_NUM_THREADS": ""})  # unset: the policy decides
    assert r.returncode == 0, r.stdout + r.stderr
    points = json.loads((sweep / "sweep.json").read_text())["points"]
    for p in points:
        assert (sweep / p["dir"] / "summary.json").is_file()
        log = (sweep / p["dir"] / "train.log").read_text()
        assert "sweep points" in log and "Traceback" not in log, log
    assert r.stdout.count("started (2 at once") == 2 and "best val acc" in r.stdout
    again = run_cli(*args)
    assert again.returncode == 0 and again.stdout.count("already finished, skipped") == 2


def test_sigterm_reaches_every_point_and_the_same_command_continues(tmp_path):
    sweep = tmp_path / "s"
    args = [*BASE, "train.epochs=30", "run.log_every=1", f"--dir={sweep}", "--parallel=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "trainlab", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for d in ("000_optim.lr=0.001", "001_optim.lr=0.01"):  # point_dir names of the grid above
            wait_for_train_records([proc], sweep / d / "metrics.jsonl", 1)
    except BaseException:
        proc.kill()
        raise
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert "Run the same command again" in err and "Traceback" not in err, err
    points = [sweep / p["dir"] for p in json.loads((sweep / "sweep.json").read_text())["points"]]
    for p in points:
        assert (p / "checkpoints" / "last.pt").is_file() and not (p / "summary.json").exists()
    r = run_cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    for p in points:
        summary = json.loads((p / "summary.json").read_text())
        assert summary["epochs"] == 30, summary
        assert "resum" in (p / "train.log").read_text().lower()

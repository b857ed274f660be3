"""Slurm integration against a real single-node cluster (munged + slurmctld + slurmd) on
localhost: submit, array sweeps (also split by MaxArraySize), status, preemption + requeue with
exact resume, and Slurm's own refusals shown clearly. No sbatch is mocked."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli
from slurm_cluster import MAX_ARRAY_SIZE, LocalSlurm

QUIET = ["run.progress=false", "run.tensorboard=false"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("starting slurmd/munged needs root (CI runs as root)")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    yield cluster
    cluster.stop()


def _wait(cond, timeout: float, what, every: float = 0.5):
    """Poll `cond` until truthy; `what` (text, or a function giving it) names it on timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for "
                         f"{what() if callable(what) else what}")


def _job_id(run_dir: Path) -> str:
    return json.loads((run_dir / "job.json").read_text())["jobs"][-1]["job_id"]


def _tail(run_dir: Path) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted(run_dir.glob("slurm-*")))


def test_submit_runs_to_summary(slurm, tmp_path):
    run = tmp_path / "run"
    r = run_cli("submit", f"run.dir={run}", "train.epochs=2", *QUIET, "--cpus-per-task=1",
                "--time=10", cwd=tmp_path, env=slurm.env)
    assert r.returncode == 0, r.stderr
    job = _job_id(run)
    assert f"submitted job {job}" in r.stdout
    assert (run / "job.sbatch").read_text().startswith("#!/bin/bash")
    _wait(lambda: (run / "summary.json").is_file(), 120, lambda: f"job {job}: {_tail(run)}")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["test_acc"] > 0.5
    assert (run / f"slurm-{job}.out").is_file()


def test_sweep_array_status_and_compare(slurm, tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli("sweep", "train.epochs=2", *QUIET, "--grid", "optim.lr=1e-3,3e-3,1e-2",
                "--max-parallel=1", f"--dir={sweep}", "--cpus-per-task=1", cwd=tmp_path,
                env=slurm.env)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert len(manifest["jobs"]) == 1, "3 points must be ONE array job"
    assert "#SBATCH --array=0-2%1" in (sweep / "sweep.sbatch").read_text()
    seen: set[str] = set()

    def states():
        s = run_cli("status", str(sweep), env=slurm.env)
        assert s.returncode == 0, s.stderr
        rows = [line.split()[2] for line in s.stdout.splitlines()[1:-1]]
        seen.update(rows)
        return rows

    _wait(lambda: states() == ["COMPLETED"] * 3, 180, lambda: f"3 array tasks; seen {seen}",
          every=1)
    assert {"PENDING", "RUNNING", "COMPLETED"} <= seen, seen
    summaries = [json.loads((sweep / p["dir"] / "summary.json").read_text())
                 for p in manifest["points"]]
    c = run_cli("compare", str(sweep), env=slurm.env)
    assert c.returncode == 0, c.stderr
    from trainlab.launch.compare import compare_sweep

    rows = compare_sweep(sweep)
    assert len(rows) == 3
    by_lr = {p["overrides"]["optim.lr"]: s
             for p, s in zip(manifest["points"], summaries, strict=True)}
    for row in rows:
        assert row["best_val_acc"] == pytest.approx(by_lr[row["optim.lr"]]["best_val_acc"])
    assert [r["best_val_acc"] for r in rows] == sorted((r["best_val_acc"] for r in rows),
                                                       reverse=True)


def test_sweep_larger_than_max_array_size_is_split(slurm, tmp_path):
    sweep = tmp_path / "big"
    r = run_cli("sweep", "model.name=mlp", "train.epochs=1", *QUIET, "--grid",
                "model.hidden=[32],[64]", "--seeds=2", f"--dir={sweep}", "--cpus-per-task=1",
                cwd=tmp_path, env=slurm.env)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert len(manifest["points"]) == 4 > MAX_ARRAY_SIZE
    assert [(j["first"], j["last"]) for j in manifest["jobs"]] == [(0, 2), (3, 3)]
    _wait(lambda: all((sweep / p["dir"] / "summary.json").is_file()
                      for p in manifest["points"]), 180, "4 split array tasks", every=1)
    got = [(yaml.safe_load((sweep / p["dir"] / "job.yaml").read_text())["model"]["hidden"],
            yaml.safe_load((sweep / p["dir"] / "config.yaml").read_text())["run"]["seed"])
           for p in manifest["points"]]
    assert got == [([32], 0), ([32], 1), ([64], 0), ([64], 1)]


def test_preemption_requeues_and_resumes_exactly(slurm, tmp_path):
    args = ["train.epochs=4", "train.batch_size=8", "data.val_fraction=0.05", "run.log_every=10",
            *QUIET,
            "--cpus-per-task=1", "--time=10"]
    base, pre = tmp_path / "base", tmp_path / "pre"
    for d in (base, pre):
        r = run_cli("submit", f"run.dir={d}", *args, cwd=tmp_path, env=slurm.env)
        assert r.returncode == 0, r.stderr
    job = _job_id(pre)

    def mid_epoch_2(d: Path) -> bool:
        """Training is well inside epoch 2 (train records every 10 steps; 170 steps/epoch)."""
        m = d / "metrics.jsonl"
        lines = m.read_text().splitlines() if m.exists() else []
        steps = [int(x) for x in re.findall(r'"kind": "train".*?"step": (\d+)', "\n".join(lines))]
        return any(200 <= s <= 280 for s in steps)

    _wait(lambda: mid_epoch_2(pre), 120, lambda: f"epoch 2 of job {job}: {_tail(pre)}",
          every=0.2)
    slurm.run("scancel", "--batch", "--signal=USR1", job)  # what --signal=B:USR1@grace sends
    _wait(lambda: "Requeued Slurm job" in _tail(pre), 60, lambda: f"the requeue: {_tail(pre)}")
    stop = re.search(r"Received SIGUSR1: saved a checkpoint at optimizer step (\d+) \(epoch "
                     r"(\d+), batch (\d+)\)", _tail(pre))
    assert stop, _tail(pre)
    assert int(stop.group(3)) > 0, "the checkpoint should be mid-epoch"
    # Slurm holds a requeued job ~2 min (BeginTime) before it may start again. Shorten that,
    # but only once it is pending again and slurmd has cleaned up the killed instance (an
    # update during the requeue is lost; a relaunch right away is refused: "already killed")
    _wait(lambda: "JobState=PENDING" in slurm.run("scontrol", "-o", "show", "job", job).stdout
          and "Restarts=1" in slurm.run("scontrol", "-o", "show", "job", job).stdout, 30,
          "the requeued job to be pending")
    time.sleep(10)

    def released() -> bool:
        info = slurm.run("scontrol", "-o", "show", "job", job).stdout
        if "JobState=PENDING" in info:
            slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now", check=False)
            return False
        return "JobState=RUNNING" in info or "JobState=COMPLETED" in info

    _wait(released, 60, lambda: slurm.run("scontrol", "show", "job", job).stdout, every=2)
    _wait(lambda: (pre / "summary.json").is_file() and (base / "summary.json").is_file(), 180,
          lambda: f"both runs to finish: {_tail(pre)}")
    log = _tail(pre)
    assert "(restart 1)" in log and "resumed from" in log
    a = torch.load(base / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(pre / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_bad_partition_and_time_show_sbatch_error(slurm, tmp_path):
    r = run_cli("submit", f"run.dir={tmp_path / 'a'}", "--partition=nosuch", cwd=tmp_path,
                env=slurm.env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "invalid partition" in r.stderr.lower() and "nosuch" in r.stderr
    assert "Nothing was submitted" in r.stderr
    r = run_cli("submit", f"run.dir={tmp_path / 'b'}", "--time=soon", cwd=tmp_path,
                env=slurm.env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "time" in r.stderr.lower() and "sbatch said" in r.stderr


def test_sbatch_missing_suggests_local_or_dry_run(tmp_path):
    env = {"PATH": str(Path(sys.executable).parent), "SLURM_CONF": "/nonexistent"}
    for cmd in (["submit", f"run.dir={tmp_path / 'r'}"],
                ["sweep", "--grid", "optim.lr=1e-3,1e-2", f"--dir={tmp_path / 's'}"]):
        r = run_cli(*cmd, cwd=tmp_path, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "sbatch" in r.stderr and "--local" in r.stderr and "--dry-run" in r.stderr
    assert not (tmp_path / "r").exists()

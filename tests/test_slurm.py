"""Slurm integration against a real single-node cluster (munged + slurmctld + slurmd) on
localhost: submit, array sweeps (also split by MaxArraySize), status, preemption + requeue with
exact resume, and Slurm's own refusals shown clearly. No sbatch is mocked.

Every wait polls Slurm's state (`scontrol show job`: JobState, Restarts) or files (metrics,
checkpoints, summary.json) with a generous deadline; none waits on a log line (a job that
Slurm kills may never write it) or sleeps a fixed time, and each fails at once, showing
`scontrol show job` and `sinfo -N -l`, when it can no longer succeed (LocalSlurm.check: a
daemon or munged gone, a node down, a job that can never start or whose end Slurm lost).
Logs are read only once Slurm says the job has ended, when they are complete. After each test
no job is left and every node is idle (LocalSlurm.ready).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli
from slurm_cluster import ENDED, MAX_ARRAY_SIZE, LocalSlurm, missing_reason

from trainlab.engine.sinks import read_jsonl
from trainlab.launch.compare import compare_sweep

QUIET = ["run.progress=false", "run.tensorboard=false"]


@pytest.fixture(scope="module")
def slurm_daemons(tmp_path_factory):
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm(slurm_daemons):
    """The module's cluster; after each test no job is left and every node is idle again."""
    yield slurm_daemons
    slurm_daemons.ready()


def _job_id(run_dir: Path) -> str:
    return json.loads((run_dir / "job.json").read_text())["jobs"][-1]["job_id"]


def _tail(run_dir: Path) -> str:
    logs = sorted([*run_dir.glob("slurm-*"), *run_dir.glob("logs/*")])
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)


def _info(slurm: LocalSlurm, job: str, run_dir: Path) -> str:
    """What the job's logs and Slurm say (for failure messages)."""
    return f"{_tail(run_dir)}\n{slurm.diagnosis(job)}"


def _restarts(slurm: LocalSlurm, job: str) -> int:
    return max((int(r.get("Restarts", 0)) for r in slurm.job(job)), default=0)


def _wait_job_end(slurm: LocalSlurm, job: str, run_dir: Path, **check: bool) -> set[str]:
    """Wait until every task of `job` has ended in Slurm; their final states. Fails at once
    when it cannot end (see LocalSlurm.check; `check` relaxes it), with the logs."""
    return slurm.wait_job_end(job, extra=lambda: _tail(run_dir), **check)


def _start_requeued(slurm: LocalSlurm, job: str, run_dir: Path, now: bool = True) -> None:
    """Start a requeued job and wait until Slurm says it runs (or ran). Slurm holds a requeued
    job (BeginTime, cred_expire = 120 s) before it may start again: with `now`, start it at
    once. A launch in the same second as the kill is refused by slurmd ("already killed") and
    the job is held: release it and try again. Never before the killed instance's step
    daemons are gone: its batch script's exit status, reported after a new start, would end
    the NEW instance as FAILED (seen once under load: Allocate 29.787, WEXITSTATUS 1 29.793).
    And not in the second the old instance's last step daemon went: slurmd refuses a job
    credential created in the second (or before) it revoked the job's, and a 2-node job then
    ended FAILED at once (CI, 2026-12-01) instead of being held. A job that ends in any other
    state than COMPLETED fails the wait at once, with Slurm's diagnosis."""
    gone_at: list[float] = []

    def old_instance_gone() -> bool:
        if not gone_at and subprocess.run(["pgrep", "-f", rf"slurmstepd: \[{job}\."],
                                          capture_output=True).returncode == 1:
            gone_at.append(time.time())
        return bool(gone_at) and time.time() >= int(gone_at[0]) + 2  # a whole second later

    def started_again() -> bool:
        rec = slurm.job(job)[0]
        if rec["JobState"] in ENDED - {"COMPLETED"}:
            raise AssertionError(f"job {job} ended {rec['JobState']} instead of starting "
                                 f"again:\n{_info(slurm, job, run_dir)}")
        if rec["JobState"] == "PENDING":
            held = rec.get("Priority") == "0" or "held" in rec.get("Reason", "").lower()
            if held or (now and old_instance_gone()):
                slurm.run(*(["scontrol", "release", job] if held else
                            ["scontrol", "update", f"JobId={job}", "StartTime=now"]),
                          check=False)
            return False
        return rec["JobState"] in ("RUNNING", "COMPLETING", "COMPLETED")

    slurm.wait(started_again, f"job {job} to start again", job, every=1, pending_ok=True,
               extra=lambda: _tail(run_dir))


def _status(path: Path, env: dict) -> list[list[str]]:
    """`trainlab status PATH` rows (run, job, state, slurm state, ...), header and total cut."""
    s = run_cli("status", str(path), env=env)
    assert s.returncode == 0, s.stderr
    return [line.split() for line in s.stdout.splitlines()[1:-1]]


def test_submit_runs_to_summary(slurm, tmp_path):
    run = tmp_path / "run"
    r = run_cli("submit", f"run.dir={run}", "train.epochs=2", *QUIET, "--cpus-per-task=1",
                "--time=30", cwd=tmp_path, env=slurm.env)
    assert r.returncode == 0, r.stderr
    job = _job_id(run)
    assert f"submitted job {job}" in r.stdout
    assert (run / "job.sbatch").read_text().startswith("#!/bin/bash")
    assert _wait_job_end(slurm, job, run) == {"COMPLETED"}, _info(slurm, job, run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["test_acc"] > 0.5
    assert (run / f"slurm-{job}.out").is_file()
    assert [row[1:4] for row in _status(run, slurm.env)] == [[job, "done", "COMPLETED"]]


def test_sweep_array_status_and_compare(slurm, tmp_path, monkeypatch):
    """Task 0 is held in its batch script until the test creates `gate`: while it waits, Slurm
    says RUNNING for it and PENDING for the others (--max-parallel=1), deterministically."""
    sweep, gate = tmp_path / "sweep", tmp_path / "gate"
    r = run_cli("sweep", "train.epochs=2", *QUIET, "--grid", "optim.lr=1e-3,3e-3,1e-2",
                "--max-parallel=1", f"--dir={sweep}", "--cpus-per-task=1", "--time=30",
                f"--setup=until [ -e {gate} ]; do sleep 0.2; done", cwd=tmp_path,
                env=slurm.env)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert len(manifest["jobs"]) == 1, "3 points must be ONE array job"
    assert "#SBATCH --array=0-2%1" in (sweep / "sweep.sbatch").read_text()
    job = manifest["jobs"][0]["job_id"]
    slurm.wait(lambda: any(rec.get("ArrayTaskId") == "0" and rec["JobState"] == "RUNNING"
                           for rec in slurm.job(job)), f"task 0 of {job} to run", job,
               extra=lambda: _tail(sweep))
    rows = _status(sweep, slurm.env)
    assert [row[1:4] for row in rows] == [[f"{job}_0", "running", "RUNNING"],
                                          [f"{job}_1", "pending", "PENDING"],
                                          [f"{job}_2", "pending", "PENDING"]], rows
    monkeypatch.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])  # compare_sweep in-process
    assert [row["status"] for row in sorted(compare_sweep(sweep), key=lambda x: x["index"])] \
        == ["running", "pending", "pending"]
    gate.touch()
    assert _wait_job_end(slurm, job, sweep) == {"COMPLETED"}
    assert [row[2:4] for row in _status(sweep, slurm.env)] == [["done", "COMPLETED"]] * 3
    summaries = [json.loads((sweep / p["dir"] / "summary.json").read_text())
                 for p in manifest["points"]]
    c = run_cli("compare", str(sweep), env=slurm.env)
    assert c.returncode == 0, c.stderr
    assert "3 points, 3 done" in c.stdout
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
                "--time=30", cwd=tmp_path, env=slurm.env)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert len(manifest["points"]) == 4 > MAX_ARRAY_SIZE
    assert [(j["first"], j["last"]) for j in manifest["jobs"]] == [(0, 2), (3, 3)]
    for j in manifest["jobs"]:
        assert _wait_job_end(slurm, j["job_id"], sweep) == {"COMPLETED"}
    got = [(yaml.safe_load((sweep / p["dir"] / "job.yaml").read_text())["model"]["hidden"],
            yaml.safe_load((sweep / p["dir"] / "config.yaml").read_text())["run"]["seed"])
           for p in manifest["points"]]
    assert got == [([32], 0), ([32], 1), ([64], 0), ([64], 1)]
    assert all((sweep / p["dir"] / "summary.json").is_file() for p in manifest["points"])


def test_points_that_start_from_a_point_wait_for_its_job(slurm, tmp_path):
    """`model.init: point:0` (launch.chain): the second point is a second array job with
    afterok on the first; while the first is held in its setup, Slurm keeps the second
    PENDING for its Dependency; then it trains from the first point's finished run."""
    gate, sweep, recipe = tmp_path / "gate", tmp_path / "chain", tmp_path / "lab.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 1},
        "sweep": {"points": [{"model.init": None}, {"model.init": "point:0"}]}}))
    r = run_cli("sweep", str(recipe), *QUIET, f"--dir={sweep}", "--cpus-per-task=1",
                "--time=30", f"--setup=until [ -e {gate} ]; do sleep 0.2; done", cwd=tmp_path,
                env=slurm.env)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((sweep / "sweep.json").read_text())
    first, second = (j["job_id"] for j in manifest["jobs"])
    slurm.wait(lambda: slurm.job(first)[0]["JobState"] == "RUNNING", f"job {first} to run",
               first, extra=lambda: _tail(sweep))
    rec = slurm.job(second)[0]
    assert rec["JobState"] == "PENDING" and rec["Reason"] == "Dependency", rec
    assert f"afterok:{first}" in rec["Dependency"], rec
    gate.touch()
    assert _wait_job_end(slurm, first, sweep) == {"COMPLETED"}
    assert _wait_job_end(slurm, second, sweep) == {"COMPLETED"}
    pre, tuned = (sweep / p["dir"] for p in manifest["points"])
    assert yaml.safe_load((tuned / "config.yaml").read_text())["model"]["init"] == str(pre)
    assert (tuned / "summary.json").is_file()


def _train_steps(run_dir: Path) -> tuple[int | None, int]:
    """(optimizer steps per epoch once epoch 1 is logged, else None; the latest train step)."""
    recs = read_jsonl(run_dir / "metrics.jsonl")
    epochs = [r["step"] for r in recs if r.get("kind") == "epoch"]
    steps = [r["step"] for r in recs if r.get("kind") == "train"]
    return (epochs[0] if epochs else None), max(steps, default=0)


def test_preemption_requeues_and_resumes_exactly(slurm, tmp_path):
    args = ["train.epochs=4", "train.batch_size=8", "data.val_fraction=0.05", "run.log_every=10",
            *QUIET, "--cpus-per-task=1", "--time=30"]
    base, pre = tmp_path / "base", tmp_path / "pre"
    for d in (base, pre):
        r = run_cli("submit", f"run.dir={d}", *args, cwd=tmp_path, env=slurm.env)
        assert r.returncode == 0, r.stderr
    job = _job_id(pre)

    def inside_an_epoch() -> bool:
        """Training is well inside epoch 2 or 3 (>= 10 steps in, >= 60 steps before its end:
        the signal must land mid-epoch, not in validation or after the last epoch)."""
        per_epoch, step = _train_steps(pre)
        assert not (pre / "summary.json").exists(), "the run finished before the signal"
        return bool(per_epoch) and per_epoch < step < 3 * per_epoch and \
            10 <= step % per_epoch <= per_epoch - 60

    slurm.wait(inside_an_epoch, f"job {job} mid-epoch", job, every=0.1,
               extra=lambda: _tail(pre))
    slurm.run("scancel", "--batch", "--signal=USR1", job)  # what --signal=B:USR1@grace sends
    # The job checkpoints, then requeues itself: Slurm counts the restart and kills the
    # instance ("CANCELLED ... DUE TO JOB REQUEUE"), so wait on Slurm, not on its log.
    slurm.wait(lambda: _restarts(slurm, job) >= 1, f"job {job} to be requeued", job,
               pending_ok=True, extra=lambda: _tail(pre))
    ckpt = torch.load(pre / "checkpoints" / "last.pt", weights_only=True)["state"]
    assert ckpt["batch"] > 0, f"the checkpoint should be mid-epoch: {ckpt}"
    _start_requeued(slurm, job, pre)
    for d in (base, pre):
        assert _wait_job_end(slurm, _job_id(d), d) == {"COMPLETED"}
    log = _tail(pre)
    assert "Received SIGUSR1: saved a checkpoint" in log and \
        f"Requeueing Slurm job {job} (restart 1 of at most 3)" in log, log
    assert re.search(r"\(restart [1-9]\)", log) and "resumed from" in log, log
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


def test_refused_sweep_is_submit_failed_then_submitted_again_and_cancelled(slurm, tmp_path):
    sweep, gate = tmp_path / "s", tmp_path / "gate"  # the gate is never opened: tasks wait
    args = ["sweep", "model.name=mlp", "train.epochs=1", *QUIET, "--grid", "optim.lr=1e-3,1e-2",
            f"--dir={sweep}", "--cpus-per-task=1", "--time=30",
            f"--setup=until [ -e {gate} ]; do sleep 0.2; done"]
    r = run_cli(*args, "--partition=nosuch", cwd=tmp_path, env=slurm.env)
    assert r.returncode == 2 and "invalid partition" in r.stderr.lower(), r.stderr
    rows = _status(sweep, slurm.env)
    assert [row[1:4] for row in rows] == [["-", "submit-failed", "-"]] * 2, rows
    assert "invalid partition" in " ".join(rows[0]).lower(), rows
    r = run_cli(*args, cwd=tmp_path, env=slurm.env)  # the same sweep, now submitted
    assert r.returncode == 0, r.stderr
    job = json.loads((sweep / "sweep.json").read_text())["jobs"][0]["job_id"]
    slurm.run("scancel", job)
    assert _wait_job_end(slurm, job, sweep) == {"CANCELLED"}
    assert [row[1:4] for row in _status(sweep, slurm.env)] == [
        [f"{job}_0", "interrupted", "CANCELLED"], [f"{job}_1", "interrupted", "CANCELLED"]]


def test_sbatch_missing_suggests_local_or_dry_run(tmp_path):
    env = {"PATH": str(Path(sys.executable).parent), "SLURM_CONF": "/nonexistent"}
    for cmd in (["submit", f"run.dir={tmp_path / 'r'}"],
                ["sweep", "--grid", "optim.lr=1e-3,1e-2", f"--dir={tmp_path / 's'}"]):
        r = run_cli(*cmd, cwd=tmp_path, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "sbatch" in r.stderr and "--local" in r.stderr and "--dry-run" in r.stderr
    assert not (tmp_path / "r").exists()


def test_resubmit_submits_only_the_unfinished_points_as_one_array(slurm, tmp_path):
    """Point 0 is cancelled while it runs (waiting on a gate; --max-parallel=1 keeps the others
    queued); once the others finish, `sweep --resubmit` submits point 0 alone as a 1-task
    array, which ends done. (Not a queued point: cancelling a task still inside the array's
    pending range leaves no record of it in Slurm at all, so a wait for its CANCELLED state
    hung; `trainlab status` shows such a point as failed, "Slurm no longer lists the job".)"""
    sweep, gate = tmp_path / "s", tmp_path / "gate"
    r = run_cli("sweep", "model.name=mlp", "train.epochs=1", *QUIET, "--grid",
                "optim.lr=1e-3,3e-3,1e-2", "--max-parallel=1", f"--dir={sweep}",
                "--cpus-per-task=1", "--time=30",
                f"--setup=until [ -e {gate} ]; do sleep 0.2; done", cwd=tmp_path, env=slurm.env)
    assert r.returncode == 0, r.stderr
    job = json.loads((sweep / "sweep.json").read_text())["jobs"][0]["job_id"]

    def task_0(state: str) -> bool:
        return any(rec.get("ArrayTaskId") == "0" and rec["JobState"] == state
                   for rec in slurm.job(job))

    slurm.wait(lambda: task_0("RUNNING"), f"task 0 of {job} to run", job,
               extra=lambda: _tail(sweep))
    slurm.run("scancel", f"{job}_0")
    slurm.wait(lambda: task_0("CANCELLED"), f"task 0 of {job} cancelled", job,
               extra=lambda: _tail(sweep))
    gate.touch()
    assert _wait_job_end(slurm, job, sweep) == {"COMPLETED", "CANCELLED"}
    assert [row[2] for row in _status(sweep, slurm.env)] == ["interrupted", "done", "done"]
    r = run_cli("sweep", "--resubmit", str(sweep), "--cpus-per-task=1", "--time=30",
                cwd=tmp_path, env=slurm.env)
    assert r.returncode == 0, r.stderr
    assert "resubmitting 1 of 3 points: 0" in r.stdout, r.stdout
    jobs = json.loads((sweep / "sweep.json").read_text())["jobs"]
    assert len(jobs) == 2 and jobs[1]["points"] == [0]
    assert "#SBATCH --array=0-0" in (sweep / "resubmit.sbatch").read_text()
    job2 = jobs[1]["job_id"]
    assert _wait_job_end(slurm, job2, sweep) == {"COMPLETED"}, _info(slurm, job2, sweep)
    rows = _status(sweep, slurm.env)
    assert [row[1:3] for row in rows] == [[f"{job2}_0", "done"], [f"{job}_1", "done"],
                                          [f"{job}_2", "done"]], rows
    again = run_cli("sweep", "--resubmit", str(sweep), cwd=tmp_path, env=slurm.env)
    assert again.returncode == 0 and "nothing to resubmit" in again.stdout, again.stderr

"""Several nodes: trainlab jobs on an emulated 2-node Slurm cluster (nodes n1, n2 on this host,
whose names do not resolve: the rendezvous must come from Slurm's NodeAddr), compared with
torchrun runs of the same config; preemption and requeue of a 2-node job; a 2-node sweep.

Every wait polls Slurm's state or files with a generous deadline (see test_slurm.py). The runs
are tiny (digits, mlp, OMP_NUM_THREADS=1); the emulated nodes oversubscribe this machine's
cores, which costs time but not correctness: the tests compare weights, not speed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from slurm_cluster import LocalSlurm, missing_reason, wait_for
from test_distributed import torchrun, weights
from test_slurm import (
    LONG,
    QUIET,
    _info,
    _job_id,
    _restarts,
    _status,
    _tail,
    _train_steps,
    _wait_job_end,
)

from trainlab.config.load import build_config
from trainlab.dist.env import DistEnv
from trainlab.dist.setup import RendezvousError, check_rendezvous
from trainlab.engine import run as engine_run
from trainlab.errors import Interrupted

# global batch 8 = 4 per rank on 2 ranks (2 per rank on 4); ~160 optimizer steps per epoch
CFG = ["model.name=mlp", "train.batch_size=8", "model.dropout=0", "data.val_fraction=0.05",
       "run.log_every=10", *QUIET]
NODES2 = ["--nodes=2", "--cpus-per-task=1", "--time=30"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    c = LocalSlurm(tmp_path_factory.mktemp("slurm2"), nodes=2, cpus_per_node=2)
    c.start()
    yield c
    c.stop()


def _submit(cluster: LocalSlurm, run_dir: Path, *args: str, env: dict | None = None) -> str:
    r = run_cli("submit", f"run.dir={run_dir}", *CFG, *args, cwd=run_dir.parent,
                env=env or {**cluster.env, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    return _job_id(run_dir)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], exact: bool) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:  # float reduction order: the tolerance of test_distributed's equivalence tests
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def two_node_run(cluster, tmp_path_factory) -> Path:
    """An uninterrupted 2-node job (1 rank per node, gloo), 3 epochs: the reference."""
    d = tmp_path_factory.mktemp("ref") / "run"
    d.parent.mkdir(exist_ok=True)
    job = _submit(cluster, d, "train.epochs=3", *NODES2)
    assert _wait_job_end(cluster, job, d) == {"COMPLETED"}, _info(cluster, job, d)
    return d


def test_two_nodes_match_two_torchrun_processes(cluster, two_node_run, tmp_path):
    summary = json.loads((two_node_run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["nodes"] == ["n1", "n2"], summary
    ref = torchrun("train", *CFG, "train.epochs=3", f"run.dir={tmp_path / 'tr'}", nproc=2,
                   timeout=LONG)
    assert ref.returncode == 0, ref.stderr[-3000:]
    _same(weights(tmp_path / "tr"), weights(two_node_run), exact=False)
    log = _tail(two_node_run)
    assert "Traceback" not in log, log


@pytest.mark.slow
def test_two_nodes_two_tasks_each_match_four_torchrun_processes(cluster, tmp_path):
    over = ["train.epochs=1", "train.batch_size=16"]
    d = tmp_path / "run"
    job = _submit(cluster, d, *over, *NODES2, "--sbatch=--ntasks-per-node=2")
    assert _wait_job_end(cluster, job, d) == {"COMPLETED"}, _info(cluster, job, d)
    summary = json.loads((d / "summary.json").read_text())
    assert summary["world_size"] == 4 and summary["nodes"] == ["n1", "n2"], summary
    ref = torchrun("train", *CFG, *over, f"run.dir={tmp_path / 'tr'}", nproc=4, timeout=LONG)
    assert ref.returncode == 0, ref.stderr[-3000:]
    _same(weights(tmp_path / "tr"), weights(d), exact=False)


@pytest.mark.slow
def test_preempted_two_node_job_requeues_and_matches(cluster, two_node_run, tmp_path):
    pre = tmp_path / "pre"
    job = _submit(cluster, pre, "train.epochs=3", *NODES2)

    def inside_an_epoch() -> bool:
        """Well inside epoch 2 (>= 10 steps in, >= 60 before its end), not in validation."""
        per_epoch, step = _train_steps(pre)
        assert not (pre / "summary.json").exists(), "the run finished before the signal"
        return bool(per_epoch) and per_epoch < step < 2 * per_epoch and \
            10 <= step % per_epoch <= per_epoch - 60

    wait_for(inside_an_epoch, LONG, lambda: f"job {job} mid-epoch: {_info(cluster, job, pre)}",
             every=0.1)
    cluster.run("scancel", "--batch", "--signal=USR1", job)
    wait_for(lambda: _restarts(cluster, job) >= 1, LONG,
             lambda: f"job {job} to be requeued: {_info(cluster, job, pre)}")
    ckpt = torch.load(pre / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["state"]["batch"] > 0 and len(ckpt["rng"]) == 2, ckpt["state"]

    def started_again() -> bool:  # Slurm holds a requeued job ~2 min: start it now
        rec = cluster.job(job)[0]
        if rec["JobState"] == "PENDING":
            held = rec.get("Priority") == "0" or "held" in rec.get("Reason", "").lower()
            cluster.run(*(["scontrol", "release", job] if held else
                          ["scontrol", "update", f"JobId={job}", "StartTime=now"]), check=False)
            return False
        return rec["JobState"] in ("RUNNING", "COMPLETING", "COMPLETED")

    wait_for(started_again, LONG, lambda: f"job {job} to start again: {_info(cluster, job, pre)}",
             every=1)
    assert _wait_job_end(cluster, job, pre) == {"COMPLETED"}, _info(cluster, job, pre)
    log = _tail(pre)
    assert "Received SIGUSR1: saved a checkpoint" in log and \
        f"Requeueing Slurm job {job} (restart 1 of at most 3)" in log and "resumed from" in log
    _same(weights(two_node_run), weights(pre), exact=True)
    assert json.loads((pre / "summary.json").read_text())["nodes"] == ["n1", "n2"]
    # trainlab status: job, state, Slurm's state, requeue count, node list
    assert [row[1:6] for row in _status(pre, cluster.env)] == [
        [job, "done", "COMPLETED", "1", "n[1-2]"]]


@pytest.mark.slow
def test_sweep_of_two_node_points_is_one_array(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli("sweep", *CFG, "train.epochs=1", "--grid", "optim.lr=1e-3,3e-3", f"--dir={sweep}",
                *NODES2, cwd=tmp_path, env={**cluster.env, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert len(manifest["jobs"]) == 1, "2 points must be ONE array job"
    text = (sweep / "sweep.sbatch").read_text()
    assert "#SBATCH --array=0-1" in text and "#SBATCH --nodes=2" in text
    job = manifest["jobs"][0]["job_id"]
    assert _wait_job_end(cluster, job, sweep) == {"COMPLETED"}, _info(cluster, job, sweep)
    for p in manifest["points"]:
        s = json.loads((sweep / p["dir"] / "summary.json").read_text())
        assert s["world_size"] == 2 and s["nodes"] == ["n1", "n2"], s


def _rank_pid(job: str, rank: int) -> int | None:
    """PID of the training process of `rank` in Slurm job `job` (from /proc: its command line
    runs `-m trainlab` and its environment has the job id and SLURM_PROCID)."""
    want = {f"SLURM_JOB_ID={job}".encode(), f"SLURM_PROCID={rank}".encode()}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            env = set((d / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if argv and b"python" in Path(argv[0].decode(errors="replace")).name.encode() and \
                b"trainlab" in argv and want <= env:
            return int(d.name)
    return None


@pytest.mark.slow
def test_lost_rank_ends_the_job_with_a_message_and_a_checkpoint(cluster, tmp_path):
    """SIGKILL rank 1's process (node n2) in epoch 2: the job ends (FAILED) naming task 1 on
    n2, and the epoch-1 checkpoint is intact."""
    d = tmp_path / "lost"
    args = ["train.epochs=3", "run.dist_timeout_s=20", *NODES2]
    job = _submit(cluster, d, *args)

    def in_epoch_2() -> int | None:
        per_epoch, step = _train_steps(d)
        assert not (d / "summary.json").exists(), "the run finished before the kill"
        ok = per_epoch and per_epoch + 10 <= step <= 2 * per_epoch - 60
        return _rank_pid(job, 1) if ok else None

    pid = wait_for(in_epoch_2, LONG, lambda: f"job {job} in epoch 2: {_info(cluster, job, d)}",
                   every=0.1)
    os.kill(pid, signal.SIGKILL)
    assert _wait_job_end(cluster, job, d) == {"FAILED"}, _info(cluster, job, d)
    err = "".join(p.read_text() for p in d.glob("slurm-*.err"))
    assert "n2: task 1: Killed" in err and "trainlab: error: the training step ended" in err, err
    ckpt = torch.load(d / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 1 and ckpt["state"]["batch"] == 0, ckpt["state"]
    # TODO: resubmitting here and checking the resumed weights hung once in two runs under
    # load (the new job's srun step never started; 900 s); left out until that is understood.


def test_unresolvable_rendezvous_is_a_clear_error_on_the_cluster(cluster, tmp_path):
    d = tmp_path / "bad"
    env = {**cluster.env, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "nosuch-node.invalid"}
    job = _submit(cluster, d, "train.epochs=1", *NODES2, env=env)
    assert _wait_job_end(cluster, job, d) == {"FAILED"}, _info(cluster, job, d)
    err = "".join(p.read_text() for p in d.glob("slurm-*.err"))
    assert "trainlab: error: rank" in err and "nosuch-node.invalid" in err, err
    assert "Traceback" not in err and "MASTER_ADDR" in err, err


# --- without a cluster ------------------------------------------------------------------------

def test_unresolvable_host_fails_at_once_naming_it():
    env = DistEnv(rank=1, world_size=2, master_addr="n1.invalid", master_port=15001,
                  launcher="slurm", node="n2")
    with pytest.raises(RendezvousError) as e:
        check_rendezvous(env, timeout_s=60)
    msg = str(e.value)
    assert "rank 1 of 2 (node n2)" in msg and "n1.invalid:15001" in msg and "MASTER_ADDR" in msg


def test_unreachable_port_fails_within_the_timeout():
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        env = DistEnv(rank=1, world_size=2, master_addr="127.0.0.1", master_port=port,
                      launcher="slurm", node="n2")
        t0 = time.monotonic()
        with pytest.raises(RendezvousError) as e:
            check_rendezvous(env, timeout_s=1.5)
        took = time.monotonic() - t0
    assert f"127.0.0.1:{port}" in str(e.value) and "run.dist_timeout_s=1.5" in str(e.value)
    assert took >= 1.0  # it retried until the deadline (no upper bound: a loaded machine)


def test_usr1_during_setup_stops_after_the_first_step(tmp_path, monkeypatch):
    """Slurm's time-limit warning before the training loop: not ignored, not fatal; the loop
    checkpoints after its first step and raises Interrupted(SIGUSR1), which requeues."""
    real = engine_run.init_distributed

    def init_then_signal(*a, **k):
        real(*a, **k)
        os.kill(os.getpid(), signal.SIGUSR1)

    monkeypatch.setattr(engine_run, "init_distributed", init_then_signal)
    cfg = build_config(None, ["model.name=mlp", "train.epochs=1", f"run.dir={tmp_path}", *QUIET])
    with pytest.raises(Interrupted) as e:
        engine_run.train(cfg)
    assert e.value.signum == signal.SIGUSR1
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["state"]
    assert state["step"] == 1 and state["batch"] == 1, state

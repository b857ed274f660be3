"""Several nodes: trainlab jobs on an emulated 2-node Slurm cluster (nodes n1, n2 on this host,
whose names do not resolve: the rendezvous must come from Slurm's NodeAddr), compared with
torchrun runs of the same config; preemption and requeue of a 2-node job; a lost rank and a
lost node; a 2-node sweep.

Every wait polls Slurm's state or files with a generous deadline and fails at once, with
`scontrol show job` and `sinfo -N -l`, when it can no longer succeed (LocalSlurm.check); after
each test no job is left and both nodes are idle, their slurmd's running (LocalSlurm.ready).
The runs are tiny (digits, mlp, OMP_NUM_THREADS=1); the emulated nodes oversubscribe this
machine's cores, which costs time but not correctness: the tests compare weights, not speed.
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
from slurm_cluster import LONG, LocalSlurm, missing_reason
from test_distributed import torchrun, weights
from test_slurm import (
    QUIET,
    _info,
    _job_id,
    _restarts,
    _start_requeued,
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
DIST_TIMEOUT = "run.dist_timeout_s=20"  # a lost rank is named within ~20 s (+ one heartbeat)
# Slurm marks a silent node DOWN 2/3..4/3 of this after its last answer (pings every third of
# it), i.e. >= 40 s after a node dies: always after rank 0 has named the lost rank (<= ~24 s
# with DIST_TIMEOUT), so that message is never cut off by Slurm killing the job first.
SLURMD_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def cluster2(tmp_path_factory):
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    c = LocalSlurm(tmp_path_factory.mktemp("slurm2"), nodes=2, cpus_per_node=2,
                   slurmd_timeout_s=SLURMD_TIMEOUT_S)
    c.start()
    yield c
    c.stop()


@pytest.fixture
def cluster(cluster2):
    """The module's 2-node cluster; after each test no job is left, every slurmd runs and
    both nodes are idle again (a node left DOWN would keep the next test's job pending)."""
    yield cluster2
    cluster2.ready()


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
def two_node_run(cluster2, tmp_path_factory) -> Path:
    """An uninterrupted 2-node job (1 rank per node, gloo), 3 epochs: the reference."""
    d = tmp_path_factory.mktemp("ref") / "run"
    d.parent.mkdir(exist_ok=True)
    job = _submit(cluster2, d, "train.epochs=3", *NODES2)
    assert _wait_job_end(cluster2, job, d) == {"COMPLETED"}, _info(cluster2, job, d)
    return d


def _after_epoch_1(run_dir: Path) -> bool:
    """Training is past epoch 1's checkpoint (>= 10 steps into epoch 2) and at most half way
    through epoch 3 (of 3): a kill now leaves an epoch-boundary checkpoint to continue from.
    (A wide window on purpose: on an idle machine an epoch takes ~1.5 s.)"""
    per_epoch, step = _train_steps(run_dir)
    assert not (run_dir / "summary.json").exists(), "the run finished before the kill"
    return bool(per_epoch) and per_epoch + 10 <= step <= 2 * per_epoch + per_epoch // 2


def _boundary_checkpoint(run_dir: Path) -> int:
    """The epoch of the run's last checkpoint, which must load and sit at an epoch boundary
    after epoch 1 or 2 (what a rank killed in epoch 2 or 3 leaves)."""
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["state"]
    assert state["epoch"] in (1, 2) and state["batch"] == 0, state
    return state["epoch"]


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
        """Well inside epoch 2 or 3 (>= 10 steps in, >= 60 before its end), not in validation
        (two windows: on an idle machine an epoch takes ~1.5 s)."""
        per_epoch, step = _train_steps(pre)
        assert not (pre / "summary.json").exists(), "the run finished before the signal"
        return bool(per_epoch) and per_epoch < step < 3 * per_epoch and \
            10 <= step % per_epoch <= per_epoch - 60

    cluster.wait(inside_an_epoch, f"job {job} mid-epoch", job, every=0.1,
                 extra=lambda: _tail(pre))
    cluster.run("scancel", "--batch", "--signal=USR1", job)
    cluster.wait(lambda: _restarts(cluster, job) >= 1, f"job {job} to be requeued", job,
                 pending_ok=True, extra=lambda: _tail(pre))
    ckpt = torch.load(pre / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["state"]["batch"] > 0 and len(ckpt["rng"]) == 2, ckpt["state"]
    _start_requeued(cluster, job, pre)
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
def test_lost_rank_ends_the_job_with_a_message_and_resubmitting_continues(cluster, two_node_run,
                                                                          tmp_path):
    """SIGKILL rank 1's process (node n2) after epoch 1: the job ends (FAILED) naming task 1 on
    n2, the last (epoch-boundary) checkpoint is intact, and submitting the same command again
    continues from it to exactly the weights of the uninterrupted 2-node job."""
    d = tmp_path / "lost"
    args = ["train.epochs=3", DIST_TIMEOUT, *NODES2]
    job = _submit(cluster, d, *args)
    pid = cluster.wait(lambda: _after_epoch_1(d) and _rank_pid(job, 1), f"job {job} past "
                       f"epoch 1", job, every=0.1, extra=lambda: _tail(d))
    os.kill(pid, signal.SIGKILL)
    assert _wait_job_end(cluster, job, d) == {"FAILED"}, _info(cluster, job, d)
    err = "".join(p.read_text() for p in d.glob("slurm-*.err"))
    assert "n2: task 1: Killed" in err and "trainlab: error: the training step ended" in err, err
    epoch = _boundary_checkpoint(d)
    job2 = _submit(cluster, d, *args)
    assert job2 != job
    assert _wait_job_end(cluster, job2, d) == {"COMPLETED"}, _info(cluster, job2, d)
    assert f"at epoch {epoch + 1}, batch 0" in (d / f"slurm-{job2}.out").read_text(), _tail(d)
    _same(weights(two_node_run), weights(d), exact=True)


@pytest.mark.slow
def test_lost_node_is_named_and_the_requeued_job_continues(cluster, two_node_run, tmp_path):
    """Node n2 dies after epoch 1 (its slurmd, the step's slurmstepd and rank 1 SIGKILLed):
    rank 0 stops within run.dist_timeout_s naming rank 1 on node n2; the controller marks n2
    DOWN after SlurmdTimeout and requeues the job (it was submitted with --requeue); the last
    checkpoint is intact; once n2's slurmd is back, the requeued job (run.resume=auto)
    continues from it to exactly the weights of the uninterrupted 2-node job."""
    d = tmp_path / "node"
    job = _submit(cluster, d, "train.epochs=3", DIST_TIMEOUT, *NODES2)
    rank1 = cluster.wait(lambda: _after_epoch_1(d) and _rank_pid(job, 1), f"job {job} past "
                         f"epoch 1", job, every=0.1, extra=lambda: _tail(d))
    assert rank1 in cluster.kill_node("n2")
    cluster.wait(lambda: _restarts(cluster, job) >= 1, f"job {job} to be requeued after node "
                 f"n2 failed", job, nodes_down_ok=True, pending_ok=True, extra=lambda: _tail(d))
    assert cluster.node_states()["n2"].startswith("down"), cluster.diagnosis(job)
    assert f"requeue job JobId={job} due to failure of node n2" in \
        (cluster.root / "log" / "slurmctld.log").read_text()
    epoch = _boundary_checkpoint(d)
    cluster.start_slurmd("n2")
    # Let Slurm start the requeued job after its own hold (BeginTime, 120 s): the kill meant
    # for the lost instance on n2 is delivered once n2 is back, and a new instance started
    # at once (StartTime=now) got it too (seen: rank 1 SIGTERMed, a second requeue).
    _start_requeued(cluster, job, d, now=False)
    assert _wait_job_end(cluster, job, d) == {"COMPLETED"}, _info(cluster, job, d)
    assert _restarts(cluster, job) == 1, _info(cluster, job, d)  # the node failure's only
    err, out = (d / f"slurm-{job}.err").read_text(), (d / f"slurm-{job}.out").read_text()
    assert "trainlab: error: rank 1 (node n2) stopped responding" in err, err
    assert "Traceback" not in err and "Received SIGTERM" not in err, err
    assert "(restart 1)" in out and f"at epoch {epoch + 1}, batch 0" in out, out
    _same(weights(two_node_run), weights(d), exact=True)


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

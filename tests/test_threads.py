"""The thread policy (dist/threads.py): which thread count a process takes for its CPUs, its
job's ranks, local sweep points, other runs, SLURM_CPUS_PER_TASK and run.threads. The speed
itself is measured in benchmarks/, not here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trainlab.dist.threads import CpuShare, local_ranks, omp_wait_policy, plan_threads


@pytest.mark.parametrize("kw,threads,passive", [
    (dict(cpus=2), 2, False),                                   # alone: every CPU
    (dict(cpus=16), 16, False),
    (dict(cpus=2, peers=2), 1, False),                          # two runs on 2 cores
    (dict(cpus=2, peers=3), 1, False),                          # never below one thread
    (dict(cpus=16, ranks_per_node=4), 4, False),                # torchrun --nproc_per_node 4
    (dict(cpus=16, ranks_per_node=4, peers=4), 4, False),       # ...its ranks registered too
    (dict(cpus=16, ranks_per_node=4, peers=8), 2, False),       # ...and another 4-rank job
    (dict(cpus=8, parallel=4), 2, False),                       # sweep --local --parallel 4
    (dict(cpus=64, slurm_cpus_per_task=8), 8, False),           # srun -c 8 on a big node
    (dict(cpus=64, slurm_cpus_per_task=8, peers=5), 8, False),  # Slurm's share is the share
    (dict(cpus=4, slurm_cpus_per_task=8), 4, False),            # affinity is the upper bound
    (dict(cpus=2, run_threads=1, peers=2), 1, False),           # explicit
    (dict(cpus=2, run_threads=2, peers=2), 2, True),            # explicit and oversubscribed
    (dict(cpus=4, run_threads=4), 4, False),
])
def test_plan(kw, threads, passive):
    plan = plan_threads(**kw)
    assert (plan.threads, plan.passive) == (threads, passive)
    assert str(plan.threads) in plan.describe()


@pytest.mark.parametrize("env,n", [
    ({}, 1),
    ({"LOCAL_WORLD_SIZE": "4"}, 4),
    ({"SLURM_PROCID": "0", "SLURM_STEP_TASKS_PER_NODE": "2(x3)", "SLURM_NODEID": "2"}, 2),
    ({"SLURM_PROCID": "5", "SLURM_STEP_TASKS_PER_NODE": "4,2(x2)", "SLURM_NODEID": "1"}, 2),
    ({"SLURM_PROCID": "0", "SLURM_STEP_TASKS_PER_NODE": "3"}, 3),
    ({"SLURM_STEP_TASKS_PER_NODE": "3"}, 1),  # not inside an srun task
    ({"LOCAL_WORLD_SIZE": "x"}, 1),  # not a number: ignored (it only plans threads)
    ({"SLURM_PROCID": "0", "SLURM_STEP_TASKS_PER_NODE": "2(x"}, 1),
    ({"SLURM_PROCID": "0", "SLURM_STEP_TASKS_PER_NODE": "2(x3)", "SLURM_NODEID": "q"}, 2),
])
def test_local_ranks(env, n):
    assert local_ranks(env) == n


def test_wait_policy_only_when_oversubscribed_by_request():
    assert omp_wait_policy(None, {}) is None
    assert omp_wait_policy(10_000, {}) == "PASSIVE"
    assert omp_wait_policy(10_000, {"OMP_WAIT_POLICY": "ACTIVE"}) is None  # the user's choice
    assert omp_wait_policy(1, {}) is None


CHILD = """
import sys, time
from pathlib import Path
from trainlab.dist.threads import CpuShare
with CpuShare({cpus}, Path(sys.argv[1])):
    print("registered", flush=True)
    sys.stdin.readline()
"""


def test_registry_counts_live_runs_on_shared_cpus(tmp_path):
    """A second process registered on overlapping CPUs counts; one on other CPUs does not;
    a killed one stops counting and its file is cleaned up."""
    procs = []
    for cpus in ({0, 1}, {7}):
        p = subprocess.Popen([sys.executable, "-c", CHILD.format(cpus=cpus), str(tmp_path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "registered"  # its file exists and is locked
        procs.append(p)
    with CpuShare({0, 1}, tmp_path) as me:
        assert me.peers() == 2
        procs[0].kill()
        procs[0].wait()
        assert me.peers() == 1
        assert len(list(tmp_path.glob("*.cpus"))) == 2  # ours and the {7} one
    procs[1].communicate("done\n", timeout=60)
    assert list(tmp_path.glob("*.cpus")) == []


def test_a_suspended_run_does_not_count_until_it_continues(tmp_path):
    """Ctrl-Z / SIGSTOP: the run holds its registry entry but uses no CPU, so it must not halve
    the others' threads (it did: a stopped run made a benchmark train on 1 thread of 2)."""
    import signal

    from slurm_cluster import wait_for

    p = subprocess.Popen([sys.executable, "-c", CHILD.format(cpus={0, 1}), str(tmp_path)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "registered"
    state = Path(f"/proc/{p.pid}/stat")

    def suspended() -> bool:
        return state.read_text().rpartition(")")[2].split()[0] in ("T", "t")

    try:
        with CpuShare({0, 1}, tmp_path) as me:
            assert me.peers() == 2
            p.send_signal(signal.SIGSTOP)
            wait_for(suspended, 60, f"process {p.pid} to be stopped", every=0.05)
            assert me.peers() == 1
            p.send_signal(signal.SIGCONT)
            wait_for(lambda: not suspended(), 60, f"process {p.pid} to continue", every=0.05)
            assert me.peers() == 2
        p.communicate("done\n", timeout=60)
    finally:
        p.kill()


def test_exported_omp_num_threads_is_honoured(tmp_path):
    """A user's OMP_NUM_THREADS is an explicit choice (below run.threads), never overridden."""
    import torch

    from trainlab.engine.threads import ThreadControl

    before = torch.get_num_threads()
    try:
        with CpuShare({0, 1}, tmp_path) as share:
            tc = ThreadControl(share, None, {"OMP_NUM_THREADS": "1"})
            assert tc.plan.threads == 1 and "OMP_NUM_THREADS" in tc.plan.describe()
            assert torch.get_num_threads() == 1
            tc = ThreadControl(share, 2, {"OMP_NUM_THREADS": "1"})
            assert tc.plan.threads == 2 and "run.threads" in tc.plan.describe()
    finally:
        torch.set_num_threads(before)


def test_points_of_a_parallel_local_sweep_divide_the_cpus(tmp_path):
    """`sweep --local --parallel N` tells each child it is one of N (TRAINLAB_SWEEP_PARALLEL),
    so the split holds from the first step, before the children see each other registered."""
    import torch

    from trainlab.engine.threads import ThreadControl

    before = torch.get_num_threads()
    try:
        with CpuShare({0, 1}, tmp_path) as share:
            tc = ThreadControl(share, None, {"TRAINLAB_SWEEP_PARALLEL": "2"})
            assert tc.plan.threads == 1 and "2 sweep points" in tc.describe()
            assert ThreadControl(share, None, {"TRAINLAB_SWEEP_PARALLEL": "x"}).plan.threads == 2
            assert ThreadControl(share, 2, {"TRAINLAB_SWEEP_PARALLEL": "2"}).plan.threads == 2
    finally:
        torch.set_num_threads(before)

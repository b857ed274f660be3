"""Applies the thread plan (`dist.threads`) to torch, and re-plans while a run trains."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from trainlab.dist.threads import CpuShare, ThreadPlan, local_ranks, plan_threads, sweep_parallel


class ThreadControl:
    """Sets torch's intra-op threads from the plan at the start of training and re-plans after
    every epoch (an epoch hook), so runs that start or end on the same CPUs rebalance."""

    def __init__(self, share: CpuShare, run_threads: int | None,
                 environ: Mapping[str, str] | None = None, parallel: int | None = None) -> None:
        env = os.environ if environ is None else environ
        self.share, self.run_threads = share, run_threads
        self.parallel = parallel if parallel is not None else sweep_parallel(env)
        self.source = "run.threads"
        omp = env.get("OMP_NUM_THREADS", "")
        if run_threads is None and omp.isdigit() and int(omp) > 0:  # the user's own setting
            self.run_threads, self.source = int(omp), "OMP_NUM_THREADS"
        self.ranks = local_ranks(env)
        slurm = env.get("SLURM_CPUS_PER_TASK", "")
        self.slurm_cpus = int(slurm) if slurm.isdigit() else None
        self.wait_policy = env.get("OMP_WAIT_POLICY")
        self.plan = self.apply()

    def describe(self) -> str:
        return self.plan.describe(self.wait_policy)

    def current(self) -> ThreadPlan:
        return plan_threads(len(self.share.cpus), run_threads=self.run_threads,
                            slurm_cpus_per_task=self.slurm_cpus, ranks_per_node=self.ranks,
                            parallel=self.parallel, peers=self.share.peers(),
                            source=self.source)

    def apply(self) -> ThreadPlan:
        self.plan = self.current()
        if torch.get_num_threads() != self.plan.threads:
            torch.set_num_threads(self.plan.threads)
        return self.plan

    def __call__(self, epoch: int) -> dict[str, float]:
        """Epoch hook: re-plan; logs nothing."""
        self.apply()
        return {}

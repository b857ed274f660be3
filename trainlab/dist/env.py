"""Where this process sits in a distributed job: from torchrun's or Slurm's variables.

    torchrun:  RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    srun:      SLURM_PROCID, SLURM_LOCALID, SLURM_STEP_NUM_TASKS (only inside an srun step),
               master = first host of SLURM_JOB_NODELIST (or SLURM_STEP_NODELIST),
               port = 15000 + SLURM_JOB_ID % 20000 (the same on every task, distinct per job)

A plain `sbatch` script that runs trainlab without srun is a single process even when the job
asked for several tasks (SLURM_NTASKS alone is not trusted: only srun starts the tasks).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launcher: str = "single"  # single | torchrun | slurm

    @property
    def is_main(self) -> bool:
        """The rank that writes files and prints: rank 0."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def first_host(nodelist: str) -> str:
    """First host of a Slurm hostlist: 'gpu[03-05,9],cpu1' -> 'gpu03'; 'a1,b2' -> 'a1'."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):  # the first comma outside brackets ends the first item
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            end = i
            break
    item = nodelist[:end].strip()
    m = re.match(r"^([^\[]*)\[([^\]]+)\](.*)$", item)
    if not m:
        return item
    prefix, ranges, suffix = m.groups()
    first = ranges.split(",")[0].split("-")[0]
    return f"{prefix}{first}{first_host(suffix) if '[' in suffix else suffix}"


def detect(environ: Mapping[str, str] | None = None) -> DistEnv:
    """The DistEnv of this process (single process when no launcher variables are set)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(
            rank=int(env["RANK"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            world_size=int(env["WORLD_SIZE"]),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500)),
            launcher="torchrun",
        )
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        world = int(env["SLURM_STEP_NUM_TASKS"])
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        job = int(env.get("SLURM_JOB_ID", "0") or 0)
        return DistEnv(
            rank=int(env["SLURM_PROCID"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            world_size=world,
            master_addr=env.get("MASTER_ADDR") or first_host(nodes),
            master_port=int(env.get("MASTER_PORT") or 15000 + job % 20000),
            launcher="slurm" if world > 1 else "single",
        )
    return DistEnv()

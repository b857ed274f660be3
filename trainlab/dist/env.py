"""Where this process sits in a distributed job: from torchrun's or Slurm's variables.

    torchrun:  RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    srun:      SLURM_PROCID, SLURM_LOCALID, SLURM_STEP_NUM_TASKS (only inside an srun step),
               master = the address Slurm itself reaches the step's first node at (its
               NodeAddr in `scontrol show node`; a node name need not be a resolvable host
               name), port = 15000 + 2 * (SLURM_JOB_ID % 10000) (the same on every task; the
               watchdog uses port + 1, so consecutive job ids never share a port);
               MASTER_ADDR / MASTER_PORT override both

A plain `sbatch` script that runs trainlab without srun is a single process even when the job
asked for several tasks (SLURM_NTASKS alone is not trusted: only srun starts the tasks).
A variable that is set but not a number in its range (MASTER_PORT=abc, WORLD_SIZE=0, RANK past
the world size) is a ConfigError naming it; an empty MASTER_ADDR / MASTER_PORT counts as unset.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from trainlab.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launcher: str = "single"  # single | torchrun | slurm
    node: str = ""  # this process's node: SLURMD_NODENAME, else the host name

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


@functools.lru_cache(maxsize=64)
def node_addr(name: str) -> str:
    """The address Slurm reaches node `name` at: its NodeAddr from `scontrol show node`
    (an emulated or renamed node's name often does not resolve); `name` itself when scontrol
    is missing, fails or does not know the node."""
    try:
        out = subprocess.run(["scontrol", "-o", "show", "node", name], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return name
    m = re.search(r"(?:^|\s)NodeAddr=(\S+)", out.stdout)
    return m.group(1) if out.returncode == 0 and m else name


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int | None = None,
         what: str = "") -> int:
    """The integer in `env[name]` (`default` when unset or empty), checked against
    [low, high]; ConfigError naming the variable otherwise."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigError(
            f"The environment variable {name}={env[name]!r} must be an integer {span}"
            f"{what}. It is set by the launcher (torchrun, srun) or by you: unset it, or fix "
            f"the launch command.")
    return value


def _port(env: Mapping[str, str], default: int) -> int:
    """MASTER_PORT, or `default`: 1..65534 (the watchdog's store listens on the next port)."""
    return _int(env, "MASTER_PORT", default, 1, 65534,
                " (a free TCP port; trainlab also uses the next one)")


def detect(environ: Mapping[str, str] | None = None,
           lookup: Callable[[str], str] = node_addr) -> DistEnv:
    """The DistEnv of this process (single process when no launcher variables are set).
    `lookup`: node name -> rendezvous address (Slurm only; `node_addr` asks scontrol)."""
    env = os.environ if environ is None else environ
    node = env.get("SLURMD_NODENAME") or socket.gethostname()
    if "RANK" in env and "WORLD_SIZE" in env:
        world = _int(env, "WORLD_SIZE", 1, 1, what=" (the number of processes)")
        return DistEnv(
            rank=_int(env, "RANK", 0, 0, world - 1, f" (below WORLD_SIZE={world})"),
            local_rank=_int(env, "LOCAL_RANK", 0, 0, world - 1, f" (below WORLD_SIZE={world})"),
            world_size=world,
            master_addr=env.get("MASTER_ADDR", "").strip() or "127.0.0.1",
            master_port=_port(env, 29500),
            launcher="torchrun",
            node=node,
        )
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        world = _int(env, "SLURM_STEP_NUM_TASKS", 1, 1, what=" (srun's number of tasks)")
        below = f" (below SLURM_STEP_NUM_TASKS={world})"
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        job = _int(env, "SLURM_JOB_ID", 0, 0)
        return DistEnv(
            rank=_int(env, "SLURM_PROCID", 0, 0, world - 1, below),
            local_rank=_int(env, "SLURM_LOCALID", 0, 0, world - 1, below),
            world_size=world,
            master_addr=env.get("MASTER_ADDR", "").strip() or (
                lookup(first_host(nodes)) if world > 1 else first_host(nodes)),
            master_port=_port(env, 15000 + 2 * (job % 10000)),
            launcher="slurm" if world > 1 else "single",
            node=node,
        )
    return DistEnv(node=node)

"""CPU threads: how many intra-op threads this process uses, decided once, here.

Two torch processes with 2 threads each on 2 cores do not run at half speed each but about 13x
slower (OpenMP threads spin-wait for cores the other process holds); three, up to 90x. So a
process takes the CPUs it may use (its affinity mask, at most SLURM_CPUS_PER_TASK) divided by
the trainlab processes that share them:

- ranks of one job on this node (torchrun's LOCAL_WORLD_SIZE, srun's tasks per node) and
  points of `sweep --local --parallel N` split the CPUs evenly;
- other trainlab runs started on the same CPUs (two terminals, a shared node) are found in a
  small registry of locked files (`CpuShare`) and counted too; a run re-plans every logging
  window, so a run started later slows the first one down to its share instead of both
  collapsing;
- `run.threads` overrides all of it; so does an OMP_NUM_THREADS the user exported (batch
  scripts commonly set it to SLURM_CPUS_PER_TASK), when run.threads is not given.

OMP_WAIT_POLICY=PASSIVE (threads sleep instead of spinning) avoids the collapse too but costs
1.9x alone, so it is used only when a process is told to use more threads than its share.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


EXPLICIT = ("run.threads", "OMP_NUM_THREADS")  # a thread count the user asked for
PARALLEL_ENV = "TRAINLAB_SWEEP_PARALLEL"  # points of `sweep --local --parallel N` at once


@dataclass(frozen=True)
class ThreadPlan:
    """threads: intra-op threads; cpus: CPUs this process may use; sharing: processes that
    divide them; passive: set OMP_WAIT_POLICY=PASSIVE (oversubscribed by request)."""

    threads: int
    cpus: int
    sharing: int
    why: str

    @property
    def passive(self) -> bool:
        """Asked (run.threads) for more threads than this process's share: sleep, not spin.
        (With one thread per process nothing spins, however many processes there are.)"""
        return self.why in EXPLICIT and self.threads > 1 and (
            self.threads * self.sharing > self.cpus)

    def describe(self, wait_policy: str | None = None) -> str:
        """e.g. "1 thread (2 CPUs shared by 2 trainlab processes)"; `wait_policy`: the
        OMP_WAIT_POLICY OpenMP actually started with."""
        wait = f", OMP_WAIT_POLICY={wait_policy}" if wait_policy else ""
        return f"{self.threads} thread{'s' * (self.threads > 1)} ({self.why}{wait})"


def local_ranks(environ: Mapping[str, str]) -> int:
    """Processes of this job on this node: torchrun's LOCAL_WORLD_SIZE, or srun's tasks on
    this node (SLURM_STEP_TASKS_PER_NODE like "2(x3)" or "4,2": the entry of this node), else 1."""
    if environ.get("LOCAL_WORLD_SIZE", "").strip().isdigit():  # (not a number: ignored)
        return max(1, int(environ["LOCAL_WORLD_SIZE"]))
    spec = environ.get("SLURM_STEP_TASKS_PER_NODE", "")
    if re.fullmatch(r"\d+(\(x\d+\))?(,\d+(\(x\d+\))?)*", spec) and "SLURM_PROCID" in environ:
        counts: list[int] = []
        for item in spec.split(","):
            n, _, rep = item.partition("(x")
            counts += [int(n)] * (int(rep.rstrip(")")) if rep else 1)
        node_id = environ.get("SLURM_NODEID", "0").strip()
        node = int(node_id) if node_id.isdigit() else 0
        return max(1, counts[min(node, len(counts) - 1)])
    return 1


def plan_threads(cpus: int, *, run_threads: int | None = None,
                 slurm_cpus_per_task: int | None = None, ranks_per_node: int = 1,
                 parallel: int = 1, peers: int = 1, source: str = "run.threads") -> ThreadPlan:
    """The thread count for a process that may use `cpus` CPUs.

    slurm_cpus_per_task: Slurm gave each task this many CPUs (its share, already divided
    among the ranks). ranks_per_node / parallel: processes of this job on this node and points
    of a local parallel sweep, known from the launcher. peers: trainlab processes registered on
    the same CPUs, this one and its own job's ranks included (0 or 1 when unknown). The CPUs
    are divided by the larger of the two counts. `source` names where an explicit
    `run_threads` came from (run.threads, or the OMP_NUM_THREADS the user exported).
    """
    cpus = max(1, cpus)
    known = max(1, ranks_per_node) * max(1, parallel)
    if run_threads is not None:
        return ThreadPlan(run_threads, cpus, max(known, peers), source)
    if slurm_cpus_per_task:
        share = min(cpus, slurm_cpus_per_task)
        return ThreadPlan(max(1, share // max(1, parallel)), cpus,
                          max(1, cpus // share) * max(1, parallel),
                          f"SLURM_CPUS_PER_TASK={slurm_cpus_per_task}")
    sharing = max(known, peers)
    parts = [f"{n} {what}" for n, what in ((ranks_per_node, "ranks"), (parallel, "sweep points"))
             if n > 1]
    if peers > known:
        parts = [f"{sharing} trainlab processes"]
    why = f"{cpus} CPUs" + (f" shared by {' x '.join(parts)}" if parts else "")
    return ThreadPlan(max(1, cpus // sharing), cpus, sharing, why)


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity mask)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


class CpuShare:
    """A registry of running trainlab processes per machine: one locked file each (named by
    PID, holding its CPU list) under `folder`. A file whose lock can be taken belongs to a
    process that is gone and is removed. `peers()` counts live entries (this one included)
    whose CPUs overlap ours."""

    def __init__(self, cpus: set[int], folder: Path | None = None) -> None:
        self.cpus = set(cpus)
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
        env = os.environ.get("TRAINLAB_CPUSHARE_DIR")  # tests: a registry of their own
        self.folder = folder or (Path(env) if env else base / f"trainlab-cpushare-{os.getuid()}")
        self.path = self.folder / f"{os.getpid()}.cpus"
        self._fd: int | None = None

    def __enter__(self) -> CpuShare:
        """Register: write and lock a temp file, then rename it into place (so nobody sees
        an unlocked entry and takes it for a leftover)."""
        tmp = self.folder / f".{os.getpid()}.tmp"
        try:
            self.folder.mkdir(mode=0o700, exist_ok=True)
            self._fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            os.write(self._fd, ",".join(map(str, sorted(self.cpus))).encode())
            os.replace(tmp, self.path)
        except OSError:  # e.g. a read-only /dev/shm: count nobody but ourselves
            if self._fd is not None:
                os.close(self._fd)
            self._fd = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def peers(self) -> int:
        """Live registered processes whose CPUs overlap ours, this one included."""
        if self._fd is None:
            return 1
        n = 1
        for f in self.folder.glob("*.cpus"):
            if f == self.path:
                continue
            try:
                fd = os.open(f, os.O_RDONLY)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:  # held: that process is alive
                    if _stopped(f.stem):  # suspended (Ctrl-Z, SIGSTOP): uses no CPU now
                        continue
                    text = os.read(fd, 1 << 16).decode(errors="replace")
                    other = {int(c) for c in text.split(",") if c.strip().isdigit()}
                    n += bool(other & self.cpus) or not other
                else:  # nobody holds it: a leftover of a process that died
                    f.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return n


def _stopped(pid: str) -> bool:
    """True when process `pid` is suspended (state T or t in /proc/PID/stat); False when it
    runs or cannot be seen (another PID namespace: counted, to be safe). A suspended run is
    counted again at the first epoch after it continues, when everyone re-plans."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rpartition(")")[2].split()[:1] in (["T"], ["t"])


def omp_wait_policy(run_threads: int | None, environ: Mapping[str, str]) -> str | None:
    """"PASSIVE" when `run.threads` asks for more threads than this process's share of the CPUs
    (OpenMP threads then sleep instead of spinning), else None. Must reach the environment
    before torch starts OpenMP; a policy the user set is kept."""
    if run_threads is None or "OMP_WAIT_POLICY" in environ:
        return None
    plan = plan_threads(len(usable_cpus()), run_threads=run_threads,
                        ranks_per_node=local_ranks(environ))
    return "PASSIVE" if plan.passive else None


def sweep_parallel(environ: Mapping[str, str]) -> int:
    """Points of a local parallel sweep running at once (set by the sweep for its children)."""
    value = environ.get(PARALLEL_ENV, "")
    return max(1, int(value)) if value.isdigit() else 1

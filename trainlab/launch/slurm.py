"""Thin wrappers around the Slurm client commands: sbatch, squeue, scontrol.

Everything goes through `_run`, which turns a missing command or a refusal into a
`TrainlabError` that shows Slurm's own message. Status uses `squeue` and `scontrol show job`
only, so it works on clusters without accounting (no `sacct`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trainlab.errors import TrainlabError

DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize


class SlurmError(TrainlabError):
    """A Slurm command is missing or refused the request."""


def require(command: str, what: str) -> None:
    """Raise a SlurmError suggesting --dry-run / --local when `command` is not on PATH."""
    if shutil.which(command) is None:
        raise SlurmError(
            f"`{command}` was not found on PATH, so {what} is not possible from this machine "
            f"(it is not a Slurm login node, or Slurm's client commands are not loaded). Use "
            f"--dry-run to print the batch script without submitting, `trainlab sweep --local` "
            f"to run a sweep's points here one after another, or run this on the cluster's "
            f"login node."
        )


def _run(args: Sequence[str], what: str, hint: str = "") -> str:
    require(args[0], what)
    try:
        p = subprocess.run(list(args), capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{' '.join(args)}` did not answer within 120 s; is slurmctld "
                         f"up? Try `sinfo`.") from None
    if p.returncode != 0:
        msg = " ".join((p.stderr or p.stdout).split()) or f"exit code {p.returncode}"
        raise SlurmError(f"{what} failed: {args[0]} said: {msg}.{hint}")
    return p.stdout


def sbatch(script: str, extra_args: Sequence[str] = (), script_path: str = "") -> str:
    """Submit `script` (a path) with `sbatch --parsable`; returns the job id ('1234')."""
    hint = (f" Nothing was submitted; the script is kept at {script_path} (check the "
            f"#SBATCH lines: partition names are listed by `sinfo`, times look like "
            f"1-02:00:00 or 90 for minutes).") if script_path else ""
    out = _run(["sbatch", "--parsable", *extra_args, script], "submitting the job", hint)
    job = out.strip().splitlines()[-1].split(";")[0] if out.strip() else ""
    if not job.isdigit():
        raise SlurmError(f"sbatch answered '{out.strip()}' instead of a job id.")
    return job


def max_array_size() -> int:
    """The cluster's MaxArraySize (array indices must be below it); Slurm's default if unknown."""
    try:
        out = _run(["scontrol", "show", "config"], "reading the Slurm configuration")
    except SlurmError:
        return DEFAULT_MAX_ARRAY_SIZE
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(m.group(1)) if m else DEFAULT_MAX_ARRAY_SIZE


def requeue(job_id: str) -> None:
    """`scontrol requeue JOB`: back to pending; the same job id (and array task) runs again."""
    _run(["scontrol", "requeue", job_id], f"requeueing job {job_id}")


@dataclass
class JobState:
    job_id: str  # '123' or '123_4' for an array task
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, REQUEUED, ...
    reason: str = ""
    restarts: int = 0
    source: str = "squeue"  # squeue | scontrol


def _expand_tasks(spec: str) -> list[int]:
    """'1-3,7' or '[1-3,7%2]' -> [1, 2, 3, 7]."""
    spec = spec.strip("[]").split("%")[0]
    out: list[int] = []
    for part in filter(None, spec.split(",")):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def squeue_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """Jobs (and every array task) still known to squeue, by id ('123', '123_0')."""
    ids = sorted(set(job_ids))
    if not ids or shutil.which("squeue") is None:
        return {}
    p = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i|%T|%r"],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:  # e.g. every id already left the queue
        return {}
    out: dict[str, JobState] = {}
    for line in p.stdout.splitlines():
        jid, state, reason = (line.split("|") + ["", ""])[:3]
        out[jid.strip()] = JobState(jid.strip(), state.strip(), reason.strip())
    return out


def scontrol_states(job_id: str) -> dict[str, JobState]:
    """Every record `scontrol show job` still holds for a job or array (finished jobs stay
    there for MinJobAge seconds); array ranges are expanded to '123_0', '123_1', ..."""
    if shutil.which("scontrol") is None:
        return {}
    p = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                       text=True, timeout=60)
    if p.returncode != 0:
        return {}
    out: dict[str, JobState] = {}
    for line in p.stdout.splitlines():
        f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        state, reason = f.get("JobState", "UNKNOWN"), f.get("Reason", "")
        restarts = int(f.get("Restarts", "0") or 0)
        tasks = f.get("ArrayTaskId")
        if tasks and f.get("ArrayJobId"):
            for t in _expand_tasks(tasks):
                jid = f"{f['ArrayJobId']}_{t}"
                out[jid] = JobState(jid, state, reason, restarts, "scontrol")
        else:
            out[f.get("JobId", job_id)] = JobState(f.get("JobId", job_id), state, reason,
                                                   restarts, "scontrol")
    return out


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """Every job and array task of `job_ids` (plain or array job ids): live states from
    squeue, filled in from `scontrol show job` for those that already left the queue."""
    ids = sorted(set(job_ids))
    states = squeue_states(ids)
    for jid in ids:
        for k, v in scontrol_states(jid).items():
            states.setdefault(k, v)
    return states


def slurm_job_id() -> str | None:
    """This process's job id when it runs inside a Slurm job (array tasks have their own)."""
    return os.environ.get("SLURM_JOB_ID") or None

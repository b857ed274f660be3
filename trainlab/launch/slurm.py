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
    exit_code: int = 0  # of the batch script, once ended (scontrol only)
    nodes: str = ""  # the job's node list ('n[1-2]'), once it got nodes (scontrol only)


def _expand_tasks(spec: str) -> list[int]:
    """'1-3,7' or '[1-3,7%2]' -> [1, 2, 3, 7]."""
    spec = spec.strip("[]").split("%")[0]
    out: list[int] = []
    for part in filter(None, spec.split(",")):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def _query(args: list[str]) -> str | None:
    """stdout of a squeue/scontrol query; None when Slurm does not know the job(s) (any more).
    Raises SlurmError when the command is missing or Slurm could not be asked."""
    require(args[0], "asking Slurm for job states")
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{' '.join(args)}` did not answer within 120 s") from None
    if p.returncode == 0:
        return p.stdout
    msg = " ".join((p.stderr or p.stdout).split())
    if "invalid job id" in msg.lower():
        return None
    raise SlurmError(f"{args[0]} failed: {msg or f'exit code {p.returncode}'}")


def squeue_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """Jobs (and every array task) still known to squeue, by id ('123', '123_0')."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    out: dict[str, JobState] = {}
    text = _query(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i|%T|%r"]) or ""
    for line in text.splitlines():
        jid, state, reason = (line.split("|") + ["", ""])[:3]
        out[jid.strip()] = JobState(jid.strip(), state.strip(), reason.strip())
    return out


def _exit_code(text: str) -> int:
    """'138:0' -> 138 (the batch script's exit code; ':n' is the signal that killed it)."""
    code, _, sig = text.partition(":")
    return int(code) if code.isdigit() and int(code) else (128 + int(sig) if sig.isdigit()
                                                           and int(sig) else 0)


def scontrol_states(job_id: str) -> dict[str, JobState]:
    """Every record `scontrol show job` still holds for a job or array (finished jobs stay
    there for MinJobAge seconds); array ranges are expanded to '123_0', '123_1', ..."""
    text = _query(["scontrol", "-o", "show", "job", job_id]) or ""
    out: dict[str, JobState] = {}
    for line in text.splitlines():
        f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        state, reason = f.get("JobState", "UNKNOWN"), f.get("Reason", "")
        restarts = int(f.get("Restarts", "0") or 0)
        code = _exit_code(f.get("ExitCode", ""))
        nodes = "" if f.get("NodeList", "(null)") in ("", "(null)") else f["NodeList"]
        tasks = f.get("ArrayTaskId")
        if tasks and f.get("ArrayJobId"):
            for t in _expand_tasks(tasks):
                jid = f"{f['ArrayJobId']}_{t}"
                out[jid] = JobState(jid, state, reason, restarts, "scontrol", code, nodes)
        else:
            jid = f.get("JobId", job_id)
            out[jid] = JobState(jid, state, reason, restarts, "scontrol", code, nodes)
    return out


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """Every job and array task of `job_ids` (plain or array job ids) that Slurm still lists:
    from `scontrol show job` (restarts, exit codes; finished jobs for MinJobAge seconds),
    with the live state and reason from squeue where it differs. Raises SlurmError when Slurm
    cannot be asked (commands missing, slurmctld down)."""
    ids = sorted(set(job_ids))
    states: dict[str, JobState] = {}
    for jid in ids:
        states.update(scontrol_states(jid))
    for k, v in squeue_states(ids).items():
        old = states.get(k)
        states[k] = JobState(k, v.state, v.reason, old.restarts if old else 0, "squeue",
                             old.exit_code if old else 0, old.nodes if old else "")
    return states


def slurm_job_id() -> str | None:
    """This process's job id when it runs inside a Slurm job (array tasks have their own)."""
    return os.environ.get("SLURM_JOB_ID") or None

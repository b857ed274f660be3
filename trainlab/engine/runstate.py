"""`<run_dir>/state.json`: what a run is doing, for `trainlab runs` and the run report.

Rank 0 writes it when training starts ("running", with the host, process id, Slurm job and
restart count) and when it ends: "finished", "interrupted" (checkpoint saved: SIGINT, SIGTERM,
a Slurm time limit) or "failed" (with the error). A run whose file still says "running" but
whose process is gone from this host was killed (e.g. out of memory): `read_state` says
"failed" then.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from trainlab.files import atomic_write_json, read_json_dict

STATE_FILE = "state.json"
STATES = ("running", "interrupted", "finished", "failed")


def _slurm(env: dict[str, str]) -> dict[str, Any]:
    job = env.get("SLURM_JOB_ID")
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    out: dict[str, Any] = {}
    if job:
        out["slurm_job_id"] = job
        out["restarts"] = int(env.get("SLURM_RESTART_COUNT", "0") or 0)
    return out


def mark_state(run_dir: Path, state: str, **extra: Any) -> None:
    """Write state.json (rank 0 only; callers check). 'running' records where the run runs."""
    path = Path(run_dir) / STATE_FILE
    now = time.time()
    old = read_json_dict(path) or {}
    if state == "running":  # a resumed run keeps the time it first started
        rec: dict[str, Any] = {"state": state, "started": old.get("started", now),
                               "host": socket.gethostname(), "pid": os.getpid(),
                               **_slurm(dict(os.environ))}
    else:
        rec = {**old, "state": state}
    rec.update(updated=now, **extra)
    atomic_write_json(path, rec)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(run_dir: Path) -> dict[str, Any]:
    """The run's state record ({} when it never wrote one), with "state" corrected from the
    other files: summary.json means finished; "running" on this host without its process means
    failed (killed)."""
    run_dir = Path(run_dir)
    rec = read_json_dict(run_dir / STATE_FILE) or {}
    if (run_dir / "summary.json").is_file():
        rec["state"] = "finished"
    elif rec.get("state") == "running" and rec.get("host") == socket.gethostname() \
            and isinstance(rec.get("pid"), int) and not _alive(rec["pid"]):
        rec.update(state="failed", error="the process ended without a word (killed?)")
    return rec

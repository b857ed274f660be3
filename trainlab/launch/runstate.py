"""What state a run (one run folder, or one point of a sweep) is in, honestly.

Shared by `trainlab status` and `trainlab compare`. The answer comes from what was recorded at
submission (job.json / sweep.json: job ids, or the sbatch error), from Slurm (`squeue`, then
`scontrol show job`; no accounting needed) and from the run's files (summary.json,
checkpoints/last.pt, metrics.jsonl). A folder whose submission failed, or never happened, is
never shown as running.

States: done (summary.json), running, pending, failed, interrupted (stopped on a signal,
cancelled or timed out: resumable from its checkpoint), submit-failed (sbatch refused it),
not-submitted (no job recorded), unknown (Slurm could not be asked); local runs (never
submitted): unfinished (files but no summary.json yet), not-started.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainlab.launch import slurm

DESCRIPTIONS = {
    "done": "summary.json written",
    "running": "Slurm runs the job",
    "pending": "queued in Slurm (waiting for resources, a dependency, or a requeue)",
    "failed": "the job ended with an error and no summary.json: see its log",
    "interrupted": "stopped (signal, cancelled, time limit) before finishing: resubmit to "
                   "continue from its checkpoint",
    "submit-failed": "sbatch refused the submission: nothing ran (see the reason)",
    "not-submitted": "no Slurm job is recorded for it: the submission did not complete",
    "unknown": "Slurm could not be asked, or the job record is damaged (see the reason)",
    "unfinished": "local run without summary.json: training now, or stopped (run the same "
                  "command again to continue)",
    "not-started": "local run that has not started",
}
PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"}
RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
INTERRUPTED = {"CANCELLED", "TIMEOUT", "PREEMPTED"}
# exit codes of a run that caught a stop signal, saved a checkpoint and was not requeued
SIGNAL_EXITS = {128 + int(getattr(signal, n)) for n in ("SIGINT", "SIGTERM", "SIGUSR1")
                if hasattr(signal, n)}


@dataclass
class Submission:
    """What was recorded for one run: a Slurm job, a failed sbatch, nothing, or a local run."""

    kind: str  # slurm | failed | none | local | damaged (job.json unreadable)
    job: str | None = None  # '123', or '123_4' for an array task
    error: str = ""  # sbatch's refusal (kind 'failed'), what is wrong (kind 'damaged')


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 3] + "..."


def sweep_submissions(manifest: dict[str, Any]) -> list[Submission]:
    """One Submission per point of a sweep manifest (sweep.json), in point order."""
    points = manifest.get("points", [])
    if manifest.get("local"):
        return [Submission("local") for _ in points]
    jobs = [j for j in manifest.get("jobs", []) if isinstance(j, dict) and "job_id" in j]
    err = manifest.get("submit_error") if isinstance(manifest.get("submit_error"), dict) else None
    out = []
    for p in points:
        i = p.get("index", -1)
        sub = Submission("none")
        for j in jobs:  # the latest submission covering this point
            if isinstance(j.get("points"), list):  # a resubmission of some points
                if i in j["points"]:
                    sub = Submission("slurm", f"{j['job_id']}_{j['points'].index(i)}")
            elif j.get("first", 0) <= i <= j.get("last", -1):
                sub = Submission("slurm", f"{j['job_id']}_{i - j.get('first', 0)}")
        if sub.kind == "none" and err and err.get("first", 0) <= i <= err.get("last", -1):
            sub = Submission("failed", error=str(err.get("error", "")))
        out.append(sub)
    return out


def run_submission(run_dir: Path) -> Submission:
    """The Submission of a single run folder, from its job.json (`trainlab submit`); a
    job.json that cannot be read is kind 'damaged' (its problem in `error`)."""
    record = run_dir / "job.json"
    if not record.is_file():  # job.yaml / job.sbatch alone: sbatch never answered
        submitting = any((run_dir / f).is_file() for f in ("job.sbatch", "job.yaml"))
        return Submission("none" if submitting else "local")
    try:
        rec = json.loads(record.read_text())
    except (OSError, ValueError) as e:
        return Submission("damaged", error=f"{record} is unreadable ({_short(str(e), 80)}); "
                                           f"`trainlab submit` writes it: submit again")
    jobs = rec.get("jobs", []) if isinstance(rec, dict) else None
    if not isinstance(jobs, list) or not all(
            isinstance(j, dict) and isinstance(j.get("job_id"), (str, int))
            and not isinstance(j.get("job_id"), bool) for j in jobs):
        return Submission("damaged", error=f"{record} does not hold a list of jobs with ids; "
                                           f"`trainlab submit` writes it: submit again")
    err = rec.get("submit_error")
    if isinstance(err, dict):
        return Submission("failed", error=str(err.get("error", "")))
    if jobs:
        return Submission("slurm", str(jobs[-1]["job_id"]))
    return Submission("local")  # a job.json without jobs: the folder was only trained here


def slurm_states(subs: Iterable[Submission]) -> tuple[dict[str, slurm.JobState], str]:
    """Slurm's view of every job in `subs` (array tasks expanded) and, when Slurm could not
    be asked, why ('' otherwise)."""
    ids = {s.job.split("_")[0] for s in subs if s.kind == "slurm" and s.job}
    if not ids:
        return {}, ""
    try:
        return slurm.job_states(ids), ""
    except slurm.SlurmError as e:
        return {}, _short(str(e))


def _has(run_dir: Path, name: str) -> bool:
    return (run_dir / name).is_file()


def classify(run_dir: Path, sub: Submission, st: slurm.JobState | None,
             problem: str = "") -> tuple[str, str]:
    """(state, reason) of one run; `st` is Slurm's record of its job (None when Slurm does not
    list it), `problem` why Slurm could not be asked."""
    done = _has(run_dir, "summary.json")
    ckpt = _has(run_dir, "checkpoints/last.pt")
    if sub.kind == "local":
        if done:
            return "done", "local run"
        started = ckpt or _has(run_dir, "metrics.jsonl")
        return ("unfinished", "local run, no summary.json yet") if started else \
            ("not-started", "local run")
    if sub.kind == "failed":
        return "submit-failed", _short(sub.error) or "sbatch failed"
    if sub.kind == "damaged":
        return ("done", "summary.json") if done else \
            ("unknown", sub.error)
    if sub.kind == "none":
        return ("done", "summary.json") if done else \
            ("not-submitted", "no job id recorded: the submission did not complete")
    if done:
        return "done", "summary.json"
    if st is None:
        if problem:
            return "unknown", problem
        if ckpt:
            return "interrupted", "Slurm no longer lists the job; checkpoint kept: resubmit"
        return "failed", "Slurm no longer lists the job; no summary.json or checkpoint"
    reason = "" if st.reason in ("None", "") else st.reason
    if st.restarts:
        reason = f"{reason}, restart {st.restarts}".lstrip(", ")
    if st.state in PENDING:
        return "pending", reason
    if st.state in RUNNING:
        return "running", reason
    if st.state in INTERRUPTED or (st.state == "FAILED" and st.exit_code in SIGNAL_EXITS):
        what = f"{st.state.lower()}" + (f", exit code {st.exit_code}" if st.exit_code else "")
        return "interrupted", what + ("; checkpoint kept: resubmit" if ckpt else "")
    if st.state == "COMPLETED":
        return "failed", "the job completed without writing summary.json: see its log"
    return "failed", ", ".join(x for x in (st.state.lower(), reason,
                                           f"exit code {st.exit_code}" if st.exit_code
                                           else "") if x)


def sweep_states(sweep_dir: Path, manifest: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(state, reason, Slurm state or '-') of every point of a sweep, in point order."""
    subs = sweep_submissions(manifest)
    states, problem = slurm_states(subs)
    out = []
    for p, sub in zip(manifest.get("points", []), subs, strict=True):
        st = states.get(sub.job) if sub.job else None
        state, reason = classify(sweep_dir / p["dir"], sub, st, problem)
        out.append((state, reason, st.state if st else "-"))
    return out

"""`trainlab status`: each run's state (launch/runstate.py) joined with its progress.

The state comes from what was recorded at submission (job ids, or sbatch's refusal), from
`squeue` (live) and `scontrol show job` (finished jobs, for MinJobAge seconds; neither needs
accounting, so `sacct` is never used) and from the run folder (`summary.json` means it
finished; a checkpoint that it can resume).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainlab.engine.sinks import read_jsonl
from trainlab.errors import TrainlabError
from trainlab.launch.compare import MANIFEST, read_manifest
from trainlab.launch.runstate import Submission, classify, run_submission, slurm_states
from trainlab.launch.runstate import sweep_submissions as _sweep_subs

# a folder given to status that holds one of RUN_FILES is a run folder (job.yaml alone: its
# submission never completed); inside a folder holding runs, status lists the runs submitted
# to Slurm (SUBMITTED_FILES) and the sweeps (`trainlab runs` lists the runs trained here)
SUBMITTED_FILES = ("job.json", "job.sbatch")
RUN_FILES = (*SUBMITTED_FILES, "job.yaml", "metrics.jsonl", "config.yaml")


@dataclass
class Target:
    label: str
    run_dir: Path
    sub: Submission  # the recorded job ('123' or '123_4'), sbatch error, or a local run

    @property
    def job(self) -> str | None:
        return self.sub.job


def _sweep_targets(sweep_dir: Path) -> list[Target]:
    m = read_manifest(sweep_dir)
    return [Target(p["dir"], sweep_dir / p["dir"], sub)
            for p, sub in zip(m["points"], _sweep_subs(m), strict=True)]


def find_targets(path: Path) -> list[Target]:
    """Runs under `path`: a sweep folder, a run folder, or a folder holding either (depth 2)."""
    if not path.exists():
        raise TrainlabError(f"{path} does not exist; give a sweep folder, a run folder or a "
                            f"folder holding them (default: the current folder).")
    if path.is_file() and path.name == MANIFEST:
        path = path.parent
    elif path.is_file():
        raise TrainlabError(f"{path} is a file; give a sweep folder, a run folder or a folder "
                            f"holding them (default: the current folder).")
    if (path / MANIFEST).is_file():
        return _sweep_targets(path)
    if any((path / f).is_file() for f in RUN_FILES):
        return [Target(path.name, path, run_submission(path))]
    out: list[Target] = []
    for d in sorted({*path.glob("*/"), *path.glob("*/*/")}):
        if any((d / f).is_file() for f in (MANIFEST, *SUBMITTED_FILES)):
            rel = d.relative_to(path)
            try:
                found = find_targets(d)
            except TrainlabError:  # a damaged sweep.json: one row says so, the others show
                found = [Target(d.name, d, Submission(
                    "damaged", error=f"{d / MANIFEST} is damaged: `trainlab status {d}` says how"))]
            out += [Target(str(rel) if t.label == d.name else f"{rel}/{t.label}", t.run_dir, t.sub)
                    for t in found]
    return out


def progress(run_dir: Path) -> dict[str, Any]:
    """epoch, epochs, step, best_val_acc, updated (unix time), done — from the run's files."""
    info: dict[str, Any] = {"epoch": 0, "epochs": None, "step": 0, "best_val_acc": None,
                            "updated": None, "done": (run_dir / "summary.json").is_file()}
    for name in ("config.yaml", "job.yaml"):
        try:
            info["epochs"] = yaml.safe_load((run_dir / name).read_text())["train"]["epochs"]
            break
        except (OSError, KeyError, TypeError, yaml.YAMLError):
            continue
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return info
    info["updated"] = metrics.stat().st_mtime
    for rec in read_jsonl(metrics):  # skips a line being written right now
        info["step"] = max(info["step"], rec.get("step", 0))
        if rec.get("kind") == "epoch":
            info["epoch"] = rec["epoch"]
            acc = rec.get("val_acc")
            if acc is not None and (info["best_val_acc"] is None or acc > info["best_val_acc"]):
                info["best_val_acc"] = acc
    return info


def _age(t: float | None) -> str:
    if t is None:
        return "-"
    s = max(0, int(time.time() - t))
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def status_rows(path: Path) -> list[dict[str, Any]]:
    """One row per run: label, job, state (runstate.DESCRIPTIONS), slurm (Slurm's own state
    or '-'), reason, requeues (Slurm's restart count, None when Slurm does not list the job),
    nodes (Slurm's node list, '' before it has nodes), epoch, epochs, step, best_val_acc,
    updated, run_dir."""
    targets = find_targets(path)
    states, problem = slurm_states(t.sub for t in targets)
    rows = []
    for t in targets:
        st = states.get(t.job) if t.job else None
        state, reason = classify(t.run_dir, t.sub, st, problem)
        rows.append({"run": t.label, "job": t.job or "-", "state": state,
                     "slurm": st.state if st else "-", "reason": reason,
                     "requeues": st.restarts if st else None, "nodes": st.nodes if st else "",
                     **progress(t.run_dir), "run_dir": str(t.run_dir)})
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A plain text table of `status_rows`."""
    head = ["run", "job", "state", "slurm", "requeues", "nodes", "epoch", "step", "best val",
            "updated", "reason"]
    body = []
    for r in rows:
        ep = f"{r['epoch']}/{r['epochs']}" if r["epochs"] else str(r["epoch"])
        acc = f"{r['best_val_acc']:.4f}" if r["best_val_acc"] is not None else "-"
        requeues = "-" if r.get("requeues") is None else str(r["requeues"])
        body.append([r["run"], r["job"], r["state"], r["slurm"], requeues, r.get("nodes") or "-",
                     ep, str(r["step"]), acc,
                     _age(r["updated"]), r["reason"]])
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
             for row in [head, *body]]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no runs")
    return "\n".join(lines)

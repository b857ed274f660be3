"""`trainlab status`: Slurm job state joined with each run's progress from its files.

The state comes from `squeue` (live) and `scontrol show job` (finished jobs, for MinJobAge
seconds); neither needs accounting, so `sacct` is never used. When Slurm no longer knows a
job, the run folder tells: `summary.json` means it finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainlab.engine.sinks import read_jsonl
from trainlab.errors import TrainlabError
from trainlab.launch import slurm
from trainlab.launch.compare import MANIFEST, read_manifest


@dataclass
class Target:
    label: str
    run_dir: Path
    job: str | None  # '123' or '123_4' (array task); None for runs never submitted


def _last_job(path: Path) -> dict[str, Any] | None:
    try:
        jobs = json.loads(path.read_text()).get("jobs", [])
    except (OSError, ValueError):
        return None
    return jobs[-1] if jobs else None


def _sweep_targets(sweep_dir: Path) -> list[Target]:
    m = read_manifest(sweep_dir)
    out = []
    for p in m["points"]:
        job = None
        for j in m.get("jobs", []):  # the latest submission covering this point
            if j.get("first", 0) <= p["index"] <= j.get("last", -1):
                job = f"{j['job_id']}_{p['index'] - j.get('first', 0)}"
        out.append(Target(p["dir"], sweep_dir / p["dir"], job))
    return out


def find_targets(path: Path) -> list[Target]:
    """Runs under `path`: a sweep folder, a run folder, or a folder holding either (depth 2)."""
    if not path.exists():
        raise TrainlabError(f"{path} does not exist; give a sweep folder, a run folder or a "
                            f"folder holding them (default: the current folder).")
    if (path / MANIFEST).is_file():
        return _sweep_targets(path)
    if (path / "job.json").is_file() or (path / "metrics.jsonl").is_file():
        job = _last_job(path / "job.json")
        return [Target(path.name, path, job["job_id"] if job else None)]
    out: list[Target] = []
    for d in sorted({*path.glob("*/"), *path.glob("*/*/")}):
        if (d / MANIFEST).is_file() or (d / "job.json").is_file():
            rel = d.relative_to(path)
            out += [Target(str(rel) if t.label == d.name else f"{rel}/{t.label}", t.run_dir, t.job)
                    for t in find_targets(d)]
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
    """One row per run: label, job, state, reason, epoch, epochs, step, best_val_acc, updated."""
    targets = find_targets(path)
    jobs = {t.job.split("_")[0] for t in targets if t.job}
    states = slurm.job_states(jobs) if jobs else {}
    rows = []
    for t in targets:
        info = progress(t.run_dir)
        st = states.get(t.job) if t.job else None
        if st is not None:
            state, reason = st.state, "" if st.reason in ("None", "") else st.reason
        elif info["done"]:
            state, reason = "COMPLETED", "summary.json" if t.job else "local run"
        elif t.job:
            state, reason = "UNKNOWN", "not in squeue/scontrol any more; no summary.json"
        else:
            state, reason = "LOCAL", "not submitted; no summary.json yet"
        rows.append({"run": t.label, "job": t.job or "-", "state": state, "reason": reason,
                     **info, "run_dir": str(t.run_dir)})
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A plain text table of `status_rows`."""
    head = ["run", "job", "state", "epoch", "step", "best val", "updated", "reason"]
    body = []
    for r in rows:
        ep = f"{r['epoch']}/{r['epochs']}" if r["epochs"] else str(r["epoch"])
        acc = f"{r['best_val_acc']:.4f}" if r["best_val_acc"] is not None else "-"
        body.append([r["run"], r["job"], r["state"], ep, str(r["step"]), acc, _age(r["updated"]),
                     r["reason"]])
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
             for row in [head, *body]]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append(", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no runs")
    return "\n".join(lines)

"""Looking at results: `trainlab report` (a run's or a sweep's page), `trainlab runs` (the runs
under a folder), `trainlab predict` (class probabilities of image files) and `trainlab export`
(ONNX / TorchScript)."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from trainlab.engine.export import export_run
from trainlab.engine.predict import (
    find_images,
    load_saved_model,
    predict_images,
    read_images,
    topk_rows,
)
from trainlab.engine.runstate import read_state
from trainlab.engine.sinks import read_jsonl
from trainlab.errors import ConfigError, TrainlabError
from trainlab.files import atomic_write_text, read_json_dict
from trainlab.launch.compare import MANIFEST, sweep_rows
from trainlab.report.figures import fmt_duration, fmt_value
from trainlab.report.run_report import write_run_report
from trainlab.report.sweep_report import write_sweep_report


# ---------------------------------------------------------------------------- report
def report_command(path: Path) -> Path:
    """Write PATH/report.html for a run folder or a sweep folder (and the page of every
    finished sweep point that has none yet); returns the page."""
    if path.name == MANIFEST and path.is_file():
        path = path.parent
    if not (path / MANIFEST).is_file():
        return write_run_report(path)
    man, rows, metric = sweep_rows(path)
    for r in rows:
        run = path / r["dir"]
        if r["status"] == "done" and not (run / "report.html").is_file():
            try:
                write_run_report(run)
            except TrainlabError as e:
                print(f"trainlab: warning: no page for point {r['dir']}: {e}", file=sys.stderr)
    varied = [k for k in man.get("varied") or [] if any(k in r for r in rows)]
    return write_sweep_report(path, man, rows, varied, metric)


# ---------------------------------------------------------------------------- runs
RUN_COLUMNS = ("name", "status", "model", "data", "method", "best_val", "test", "epochs", "wall",
               "date")
DESCENDING = {"best_val", "test", "date", "wall"}  # --sort: best / newest / longest first


def _run_dirs(root: Path, depth: int = 3) -> list[Path]:
    found, level = [], [root]
    for _ in range(depth + 1):
        nxt = []
        for d in level:
            if (d / "config.yaml").is_file() and ((d / "metrics.jsonl").is_file()
                                                  or (d / "checkpoints").is_dir()):
                found.append(d)
                continue
            try:
                nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
        level = nxt
    return found


def run_row(root: Path, run_dir: Path) -> dict[str, Any]:
    """One run's line for `trainlab runs`, from its files."""
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        cfg = {}
    summary = read_json_dict(run_dir / "summary.json") or {}
    epochs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "epoch"]
    state = read_state(run_dir)
    status = state.get("state")
    if status is None:  # a run from before state.json
        status = "finished" if summary else "interrupted" if (
            run_dir / "checkpoints" / "last.pt").is_file() else "failed"
    accs = [r["val_acc"] for r in epochs if isinstance(r.get("val_acc"), (int, float))]
    started = state.get("started") or (run_dir / "config.yaml").stat().st_mtime
    return {
        "name": str(run_dir.relative_to(root)) if run_dir != root else run_dir.name,
        "status": status,
        "model": (cfg.get("model") or {}).get("name"),
        "data": (cfg.get("data") or {}).get("name"),
        "method": (cfg.get("method") or {}).get("name"),
        "best_val": summary.get("best_val_acc", max(accs) if accs else None),
        "test": summary.get("test_acc"),
        "epochs_done": summary.get("epochs", epochs[-1]["epoch"] if epochs else 0),
        "epochs_total": (cfg.get("train") or {}).get("epochs"),
        "wall_s": summary.get("wall_s", epochs[-1].get("wall_s") if epochs else None),
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "path": str(run_dir),
    }


def list_runs(root: Path, sort: str = "date") -> list[dict[str, Any]]:
    """Every run folder under `root` (itself, or up to 3 levels down), sorted by `sort`."""
    if sort not in RUN_COLUMNS:
        raise ConfigError(f"--sort must be one of {', '.join(RUN_COLUMNS)} (got {sort!r}).")
    if not root.is_dir():
        raise TrainlabError(f"{root} is not a folder; give the folder holding your runs "
                            f"(default: runs/).")
    rows = [run_row(root, d) for d in _run_dirs(root)]
    field = {"epochs": "epochs_done", "wall": "wall_s"}.get(sort, sort)
    have = [r for r in rows if r[field] is not None]
    have.sort(key=lambda r: (r[field], r["name"]), reverse=sort in DESCENDING)
    return have + sorted((r for r in rows if r[field] is None), key=lambda r: r["name"])


def format_runs(rows: list[dict[str, Any]]) -> str:
    """The runs as a plain-text table."""
    header = ["name", "status", "model", "data", "method", "best val", "test", "epochs", "wall",
              "date"]
    body = [[r["name"], r["status"], str(r["model"]), str(r["data"]), str(r["method"]),
             fmt_value(r["best_val"], "_acc"), fmt_value(r["test"], "_acc"),
             f"{r['epochs_done']}/{r['epochs_total']}", fmt_duration(r["wall_s"]), r["date"]]
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
                     for line in [header, *body])


def runs_command(root: Path, sort: str = "date", as_json: bool = False) -> None:
    """`trainlab runs`: print the table (or JSON) of the runs under `root`."""
    rows = list_runs(root, sort)
    if as_json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no runs under {root}")
    else:
        print(format_runs(rows))


# ---------------------------------------------------------------------------- predict
def predict_command(path: str, inputs: Sequence[str], topk: int = 1, out: str | None = None,
                    skip_bad: bool = False, which: str = "last") -> None:
    """`trainlab predict`: CSV (path,pred,prob,top2,prob2,...) to `out`, or a console table."""
    if topk < 1:
        raise ConfigError(f"--topk must be at least 1 (got {topk}).")
    files = find_images(inputs)  # before the model loads: a wrong path fails fast
    saved = load_saved_model(path, which)
    kept, x, bad = read_images(files, saved, skip_bad)
    for f, reason in bad:
        print(f"trainlab: warning: skipped {f}: {reason}", file=sys.stderr)
    probs = predict_images(saved, x) if len(kept) else None
    tops = topk_rows(probs, saved.class_names, topk) if probs is not None else []
    k = min(topk, len(saved.class_names))
    header = ["path", "pred", "prob"] + [f"{n}{i}" for i in range(2, k + 1)
                                         for n in ("top", "prob")]
    rows = [[str(f)] + [v for name, p in top for v in (name, f"{p:.6f}")]
            for f, top in zip(kept, tops, strict=True)]
    if out:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(header)
        w.writerows(rows)
        atomic_write_text(out, buf.getvalue())
    else:
        widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
        for line in [header, *rows]:
            print("  ".join(x.ljust(wd) for x, wd in zip(line, widths, strict=True)).rstrip())
    where = f"; wrote {out}" if out else ""
    skipped = f", {len(bad)} unreadable files skipped" if bad else ""
    print(f"{len(kept)} images predicted with {saved.path}{skipped}{where}",
          file=sys.stderr if not out else sys.stdout)


def export_command(path: str, fmt: str, out: str | None, which: str = "last",
                   overrides: Sequence[str] = ()) -> None:
    """`trainlab export`: write the file, print the self-check."""
    res = export_run(path, fmt, out, which, overrides)
    c, h, w = res["shape"][1:]
    print(f"exported {res['format']} to {res['out']}: input float images in [0, 1] of shape "
          f"(N, {c}, {h}, {w}), N dynamic, normalization inside; output logits (N, "
          f"{res['num_classes']}).")
    print(f"check on {res['n']} test images: max abs difference to the original "
          f"{res['max_abs_diff']:.3g} (limit 1e-4)")

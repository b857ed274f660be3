"""`trainlab compare SWEEP_DIR`: every point of a sweep in one table, a CSV and a plot.

A sweep folder holds `sweep.json` (written by `trainlab sweep`) and one ordinary run folder per
point. A finished point is read from its `summary.json`; an unfinished one from what its
`metrics.jsonl` holds so far, so `compare` is useful while the array job still runs. Each
point's status (done, running, pending, failed, interrupted, submit-failed, ...) is the one
`trainlab status` shows (launch/runstate.py).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import yaml

from trainlab.engine.sinks import read_jsonl
from trainlab.errors import TrainlabError
from trainlab.files import atomic_write_text, read_json_dict
from trainlab.launch.runstate import DESCRIPTIONS, sweep_states
from trainlab.report.figures import fmt_duration, fmt_value
from trainlab.report.plots import sweep_plot

MANIFEST = "sweep.json"  # written by `trainlab sweep` (launch/sweep.py)
FORMAT = "trainlab-sweep/1"
# metric -> True when higher is better
METRICS = {"best_val_acc": True, "best_val_loss": False, "final_val_acc": True,
           "test_acc": True, "test_loss": False, "test_top5": True}
LABELS = {"best_val_acc": "best val acc", "best_val_loss": "best val loss",
          "final_val_acc": "final val acc", "test_acc": "test acc", "test_loss": "test loss",
          "test_top5": "test top-5"}
STATUS = DESCRIPTIONS  # status -> what it means (printed under the table)
CSV_COLUMNS = ["best_val_acc", "best_val_loss", "best_epoch", "final_val_acc", "test_acc",
               "test_loss", "epochs_done", "epochs_total", "wall_s", "status"]


def read_manifest(sweep_dir: Path) -> dict[str, Any]:
    """The checked contents of `SWEEP_DIR/sweep.json`."""
    path = sweep_dir / MANIFEST
    if not path.is_file():
        where = "does not exist" if not sweep_dir.exists() else "has no sweep.json"
        raise TrainlabError(
            f"'{sweep_dir}' {where}, so it is not a sweep folder. Pass the folder that "
            f"`trainlab sweep` created (it holds sweep.json and one run folder per point).")
    try:
        man = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TrainlabError(f"{path} is not valid JSON ({e}); it is written by `trainlab "
                            f"sweep`: restore it or rerun the sweep.") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        got = man.get("format") if isinstance(man, dict) else type(man).__name__
        raise TrainlabError(f"{path} has format {got!r}, expected {FORMAT!r}: it was not "
                            f"written by this version of `trainlab sweep`: run the sweep again "
                            f"with this version, into a new --dir.")
    problem = _manifest_problem(man)
    if problem:
        raise TrainlabError(f"{path} is damaged: {problem}. It is written by `trainlab sweep`: "
                            f"restore it, or rerun the sweep with a new --dir.")
    return man


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _record_problem(rec: Any, what: str, n: int) -> str:
    """What is wrong with one entry of 'jobs' (or 'submit_error'), '' when nothing."""
    if not isinstance(rec, dict):
        return f"{what} must be a mapping (got {rec!r})"
    if "points" in rec:
        pts = rec["points"]
        if not isinstance(pts, list) or not all(_is_int(i) and 0 <= i < n for i in pts):
            return f"{what}: 'points' must list point indices 0..{n - 1} (got {pts!r})"
    elif not all(_is_int(rec.get(k)) for k in ("first", "last")):
        return (f"{what} must have integer 'first' and 'last' point indices (got "
                f"{rec.get('first')!r}, {rec.get('last')!r})")
    return ""


def _manifest_problem(man: dict[str, Any]) -> str:
    """What is wrong with a sweep manifest's structure, '' when nothing."""
    points = man.get("points")
    if not isinstance(points, list):
        return "'points' must be a list of {index, dir, overrides} entries"
    for i, p in enumerate(points):
        if not isinstance(p, dict) or p.get("index") != i or not _is_int(p.get("index")):
            got = f"index {p.get('index')!r}" if isinstance(p, dict) else repr(p)
            return f"'points' entry {i} must be a mapping with index {i} (got {got})"
        d = p.get("dir")
        if not isinstance(d, str) or d in ("", ".", "..") or "/" in d or "\\" in d:
            return (f"'points' entry {i}: 'dir' must be the name of a folder inside the sweep "
                    f"(got {d!r})")
        if not isinstance(p.get("overrides", {}), dict):
            return (f"'points' entry {i}: 'overrides' must map keys to values (got "
                    f"{p['overrides']!r})")
    if not isinstance(man.get("local", False), bool):
        return f"'local' must be true or false (got {man['local']!r})"
    for key in ("recipe_name", "recipe"):
        if man.get(key) is not None and not isinstance(man[key], str):
            return f"'{key}' must be a string (got {man[key]!r})"
    varied = man.get("varied", [])
    if not isinstance(varied, list) or not all(isinstance(k, str) for k in varied):
        return f"'varied' must be a list of config keys (got {varied!r})"
    jobs = man.get("jobs", [])
    if not isinstance(jobs, list):
        return f"'jobs' must be a list of submissions (got {jobs!r})"
    for j, rec in enumerate(jobs):
        problem = _record_problem(rec, f"job record {j}", len(points))
        if problem:
            return problem
        if not isinstance(rec.get("job_id"), (str, int)) or isinstance(rec["job_id"], bool):
            return f"job record {j} must have a job_id (got {rec.get('job_id')!r})"
    if man.get("submit_error") is not None:
        return _record_problem(man["submit_error"], "'submit_error'", len(points))
    return ""


def _epochs_total(run_dir: Path) -> int | None:
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        return int(cfg["train"]["epochs"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def _best(epochs: list[dict[str, Any]], key: str, higher: bool) -> tuple[float | None, int | None]:
    """(best value of `key` over the epoch records, its epoch); (None, None) when never logged."""
    vals = [(r[key], r.get("epoch")) for r in epochs if isinstance(r.get(key), (int, float))]
    if not vals:
        return None, None
    return max(vals, key=lambda v: v[0]) if higher else min(vals, key=lambda v: v[0])


def point_row(sweep_dir: Path, point: dict[str, Any], status: str = "",
              reason: str = "") -> dict[str, Any]:
    """One point's row: its overrides (one key each), its results so far and its `status`
    (runstate; without it: done when summary.json exists, else unfinished)."""
    run_dir = sweep_dir / point["dir"]
    records = read_jsonl(run_dir / "metrics.jsonl")
    epochs = [r for r in records if r.get("kind") == "epoch"]
    tests = [r for r in records if r.get("kind") == "test"]
    summary = read_json_dict(run_dir / "summary.json")
    last, test = (epochs[-1] if epochs else {}), (tests[-1] if tests else {})
    acc, acc_epoch = _best(epochs, "val_acc", True)
    loss, loss_epoch = _best(epochs, "val_loss", False)
    if summary:
        res = {k: summary.get(k) for k in ("best_val_acc", "best_epoch", "final_val_acc",
                                            "test_acc", "test_loss", "test_top5", "wall_s")}
        res["epochs_done"] = summary.get("epochs")
    else:  # unfinished: what the epoch records say so far
        res = {"best_val_acc": acc, "best_epoch": acc_epoch, "final_val_acc": last.get("val_acc"),
               **{k: test.get(k) for k in ("test_acc", "test_loss", "test_top5")},
               "wall_s": last.get("wall_s"), "epochs_done": last.get("epoch", 0 if records
                                                                      else None)}
    if res["best_val_acc"] is None:  # pretraining (no accuracy): the epoch of the lowest loss
        res["best_epoch"] = loss_epoch
    status = status or ("done" if summary else "unfinished")
    row: dict[str, Any] = {"index": point.get("index"), "dir": point["dir"],
                           **(point.get("overrides") or {})}
    row.update(res, best_val_loss=loss, epochs_total=_epochs_total(run_dir), status=status,
               reason=reason)
    return row


def _sweep(sweep_dir: Path, metric: str) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """(manifest, rows sorted best first, the metric actually used)."""
    if metric not in METRICS:
        raise TrainlabError(f"Unknown metric {metric!r} for compare. Valid metrics: "
                            f"{', '.join(METRICS)}.")
    man = read_manifest(sweep_dir)
    rows = [point_row(sweep_dir, p, state, reason)
            for p, (state, reason, _) in zip(man["points"], sweep_states(sweep_dir, man),
                                             strict=True)]
    if metric == "best_val_acc" and all(r["best_val_acc"] is None for r in rows) and any(
            r["best_val_loss"] is not None for r in rows):
        metric = "best_val_loss"  # pretraining (mae, simclr): no accuracy, lowest val loss wins
    higher = METRICS[metric]
    for r in rows:
        r["metric"] = metric

    def key(r: dict[str, Any]) -> tuple[bool, float, int]:
        v = r[metric]
        ok = isinstance(v, (int, float)) and math.isfinite(v)
        return (not ok, (-v if higher else v) if ok else 0.0, r["index"] or 0)

    return man, sorted(rows, key=key), metric


def sweep_rows(sweep_dir: Path, metric: str = "best_val_acc"
               ) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """(manifest, rows best first, the metric used): what `compare_sweep` returns, with the
    manifest and the metric (best_val_loss for pretraining sweeps)."""
    return _sweep(Path(sweep_dir), metric)


def compare_sweep(sweep_dir: Path, metric: str = "best_val_acc") -> list[dict[str, Any]]:
    """Rows of every point of the sweep in `sweep_dir`, best `metric` first, unfinished or
    missing points (no value yet) last. Each row: index, dir, one key per override of the
    point (e.g. "optim.lr"), best_val_acc, best_val_loss, best_epoch, final_val_acc, test_acc,
    test_loss, test_top5, epochs_done, epochs_total, wall_s (s), status (runstate: done,
    running, pending, failed, interrupted, submit-failed, ...), reason and metric: the metric
    sorted by (best_val_loss when best_val_acc was asked for but the sweep pretrains,
    mae/simclr, and logs no accuracy)."""
    return _sweep(Path(sweep_dir), metric)[1]


# ---------------------------------------------------------------------------- output
def format_table(rows: list[dict[str, Any]], varied: list[str], metric: str) -> str:
    """A plain-text table: rank, point, the varied keys, results and status."""
    extra = [acc if any(r[acc] is not None for r in rows) else loss  # pretraining: losses
             for acc, loss in (("best_val_acc", "best_val_loss"), ("test_acc", "test_loss"))]
    cols = [metric] + [c for c in extra if c != metric]
    header = ["#", "point", *varied, *(LABELS[c] for c in cols), "best ep", "epochs", "wall",
              "status"]
    body = []
    for rank, r in enumerate(rows, 1):
        done, total = r["epochs_done"], r["epochs_total"]
        epochs = "-" if done is None else f"{done}/{total}" if total else str(done)
        body.append([str(rank), str(r["index"]), *(fmt_value(r.get(k)) for k in varied),
                     *(fmt_value(r[c], c) for c in cols), fmt_value(r["best_epoch"]), epochs,
                     fmt_duration(r["wall_s"]), r["status"]])
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    lines = ["  ".join(x.rjust(w) if i < len(header) - 1 else x
                       for i, (x, w) in enumerate(zip(line, widths, strict=True))).rstrip()
             for line in [header, *body]]
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], varied: list[str], path: Path) -> None:
    """Same rows, machine-readable (lists as JSON, missing values empty)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["rank", "index", "dir", *varied, *CSV_COLUMNS])
    for rank, r in enumerate(rows, 1):
        vals = [r.get(k) for k in (*varied, *CSV_COLUMNS)]
        w.writerow([rank, r["index"], r["dir"], *("" if v is None else json.dumps(v)
                    if isinstance(v, list) else v for v in vals)])
    atomic_write_text(path, buf.getvalue())


def compare_command(sweep_dir: Path, metric_asked: str = "best_val_acc",
                    top: int | None = None) -> None:
    """`trainlab compare`: print the table; write compare.csv and compare.png into the sweep
    folder."""
    if sweep_dir.name == MANIFEST and sweep_dir.is_file():
        sweep_dir = sweep_dir.parent
    if top is not None and top < 1:
        raise TrainlabError(f"--top must be at least 1 (got {top}); leave it out to list "
                            f"every point.")
    man, rows, metric = _sweep(sweep_dir, metric_asked)
    varied = [k for k in man.get("varied") or [] if any(k in r for r in rows)]
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUS}
    name = man.get("recipe_name") or "sweep"
    print(f"sweep {sweep_dir} ({name}): {len(rows)} points, "
          + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if metric != metric_asked:
        print(f"no point logs {metric_asked} (pretraining method), so the runs are ranked by the "
              f"lowest validation loss (best_val_loss)")
    order = "highest" if METRICS[metric] else "lowest"
    shown = rows[:top] if top else rows
    more = f", top {len(shown)} of {len(rows)}" if len(shown) < len(rows) else ""
    print(f"sorted by {metric} ({order} first{more})\n")
    print(format_table(shown, varied, metric))
    refused = next((r["reason"] for r in rows if r["status"] == "submit-failed"), "")
    notes = [f"{s}: {STATUS[s]}" + (f" ({refused})" if s == "submit-failed" and refused else "")
             for s, n in counts.items() if n and s != "done"]
    if notes:
        print("\n" + "\n".join(notes))
    write_csv(rows, varied, sweep_dir / "compare.csv")
    title = f"{name}: {len(rows)} points ({counts['done']} done), {LABELS[metric]}"
    sweep_plot(rows, varied, metric, LABELS[metric], sweep_dir / "compare.png", title)
    print(f"\ntable: {sweep_dir / 'compare.csv'}\nplot:  {sweep_dir / 'compare.png'}")

"""`trainlab report SWEEP_DIR`: SWEEP_DIR/report.html, the sweep's page.

A sortable table of every point (status, swept values, best/final val, test, wall time, a link
to its own page), the metric against each swept key (log axis for lr; seeds as points with
their mean), and the validation curves of all points overlaid. The rows come from the caller
(launch/, which reads the sweep folder); figures go to SWEEP_DIR/plots/ too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trainlab.engine.sinks import read_jsonl
from trainlab.files import atomic_write_text
from trainlab.report import html as H
from trainlab.report.figures import fmt_duration, fmt_value
from trainlab.report.plots import sweep_plot
from trainlab.report.run_figures import val_curves_figure

LABELS = {"best_val_acc": "best val acc", "best_val_loss": "best val loss",
          "final_val_acc": "final val acc", "test_acc": "test acc", "test_loss": "test loss"}


def point_label(row: dict[str, Any], varied: list[str]) -> str:
    """'#3 optim.lr=0.01 run.seed=1' (the point's swept values)."""
    vals = " ".join(f"{k.split('.')[-1]}={fmt_value(row.get(k))}" for k in varied if k in row)
    return f"#{row['index']} {vals}".strip()


def val_curves(sweep_dir: Path, rows: list[dict[str, Any]], varied: list[str],
               key: str) -> list[tuple[str, list[int], list[float]]]:
    """Per point with epoch records: (label, epochs, `key` values)."""
    out = []
    for r in sorted(rows, key=lambda r: r["index"] or 0):
        recs = [x for x in read_jsonl(sweep_dir / r["dir"] / "metrics.jsonl")
                if x.get("kind") == "epoch" and isinstance(x.get(key), (int, float))]
        if recs:
            out.append((point_label(r, varied), [x["epoch"] for x in recs],
                        [x[key] for x in recs]))
    return out


def write_sweep_report(sweep_dir: Path, manifest: dict[str, Any], rows: list[dict[str, Any]],
                       varied: list[str], metric: str) -> Path:
    """Write SWEEP_DIR/report.html (+ plots/metric.png, plots/val_curves.png); rows best
    first, as `launch.compare` ranks them (each with index, dir, status, results)."""
    sweep_dir = Path(sweep_dir)
    t0 = time.perf_counter()
    plots = sweep_dir / "plots"
    name = manifest.get("recipe_name") or "sweep"
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    acc = any(r.get("best_val_acc") is not None for r in rows)
    results = ["best_val_acc", "final_val_acc", "test_acc"] if acc else \
        ["best_val_loss", "test_loss"]
    header = ["rank", "point", *varied, "status", *(LABELS[c] for c in results), "epochs",
              "wall"]
    body, keys = [], []
    for rank, r in enumerate(rows, 1):
        page = sweep_dir / r["dir"] / "report.html"
        link = (f'<a href="{H.esc(r["dir"])}/report.html">{H.esc(r["dir"])}</a>'
                if page.is_file() else H.esc(r["dir"]) + " (no page yet)")
        done, total = r.get("epochs_done"), r.get("epochs_total")
        body.append([str(rank), link, *(H.esc(fmt_value(r.get(k))) for k in varied),
                     H.esc(r["status"]), *(H.esc(fmt_value(r.get(c), c)) for c in results),
                     "-" if done is None else f"{done}/{total}", fmt_duration(r.get("wall_s"))])
        num = [r.get(k) if isinstance(r.get(k), (int, float)) else fmt_value(r.get(k))
               for k in varied]
        keys.append([rank, r["index"], *num, r["status"],
                     *(r.get(c) if r.get(c) is not None else "" for c in results),
                     done if done is not None else "", r.get("wall_s") or ""])
    table = H.table(header, body, sortable=True, sort_values=keys, raw=True,
                    table_id="points-table")
    title = f"{name}: {len(rows)} points, {LABELS[metric]}"
    metric_png = sweep_plot(rows, varied, metric, LABELS[metric], plots / "metric.png", title)
    ckey = "val_acc" if acc else "val_loss"
    curves = val_curves(sweep_dir, rows, varied, ckey)
    curves_png = val_curves_figure(curves, ckey.replace("_", " "), plots / "val_curves.png",
                                   f"{ckey.replace('_', ' ')} per epoch, every point")
    status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    best = rows[0] if rows and rows[0].get(metric) is not None else None
    tiles = [(str(len(rows)), "points"), (status, "status")]
    if best is not None:
        tiles.append((fmt_value(best[metric], metric), f"{LABELS[metric]}, best point "
                      f"({point_label(best, varied)})"))
    sections = [
        H.section("overview", "Overview", H.cards(tiles) + f'<p class="note">Swept: '
                  f'{H.esc(", ".join(varied) or "-")}. Sorted by {H.esc(LABELS[metric])}; click '
                  f'a header to sort by another column; a point opens its run page.</p>'),
        H.section("points", "Points", table),
        H.section("metric", f"{LABELS[metric]} against each swept key",
                  '<p class="note">Each run a dot (hollow: unfinished), the mean per value a '
                  'line; seeds are repeats, drawn as dots around their mean.</p>'
                  + H.img(metric_png, "metric against swept keys")),
        H.section("curves", "Validation curves", H.img(curves_png, "validation curves")),
    ]
    sub = (f"{sweep_dir.resolve()} — written {time.strftime('%Y-%m-%d %H:%M:%S')} in "
           f"{time.perf_counter() - t0:.1f}s")
    out = sweep_dir / "report.html"
    atomic_write_text(out, H.page(f"trainlab sweep: {name}", sub, sections))
    return out

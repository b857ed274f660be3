"""Plots of results: the lr range test and a sweep's metric against each swept key."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from matplotlib.ticker import NullFormatter

from trainlab.report.figures import fmt_value, new_figure, save_figure


def lr_find_plot(lrs: list[float], losses: list[float], smoothed: list[float],
                 suggested: float | None, min_lr: float, path: Path, beta: float) -> Path:
    """Smoothed (and raw, faint) loss against lr on a log axis; suggestion and minimum marked."""
    fig = new_figure(6.4, 4.2)
    ax = fig.subplots()
    ax.plot(lrs, losses, color="0.75", lw=0.8, label="loss per step")
    ax.plot(lrs, smoothed, color="C0", lw=1.8, label=f"smoothed (beta {beta})")
    i_min = lrs.index(min_lr)
    ax.plot([min_lr], [smoothed[i_min]], "o", color="C3", label=f"minimum, lr {min_lr:.2g}")
    if suggested is not None:
        i = lrs.index(suggested)
        ax.axvline(suggested, color="C2", ls="--", lw=1)
        ax.plot([suggested], [smoothed[i]], "o", color="C2",
                label=f"steepest descent, lr {suggested:.2g} (suggested)")
    lo = min(smoothed[i_min], *losses[:i_min + 1])
    hi = max(smoothed[:i_min + 1])  # the blow-up after the minimum is cut off
    span = max(hi - lo, 1e-3 * abs(lo) + 1e-9)
    ax.set_ylim(lo - 0.1 * span, hi + 0.6 * span)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("lr range test")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _log_axis(key: str, xs: list[Any]) -> bool:
    if not xs or min(xs) <= 0:
        return False
    return key.endswith("lr") or max(xs) / min(xs) >= 100


def sweep_plot(rows: list[dict[str, Any]], varied: list[str], metric: str, ylabel: str,
               path: Path, title: str) -> Path:
    """`metric` against each varied key, one subplot per key: every run as a dot (hollow:
    unfinished, value so far) and, per value, the mean over its runs (seeds, other keys) as a
    line. run.seed gets no subplot of its own when other keys vary: seeds are repeats."""
    keys = [k for k in varied if k != "run.seed"] or varied or ["index"]
    fig = new_figure(4.5 * len(keys), 3.6)
    axes = fig.subplots(1, len(keys), squeeze=False)
    have = [r for r in rows if isinstance(r[metric], (int, float))]
    ys = [r[metric] for r in have]
    for ax, key in zip(axes[0], keys, strict=True):
        vals = [r.get(key) for r in have]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals)
        if numeric:
            xpos = vals
        else:  # categorical: one position per value, labelled
            labels = sorted({fmt_value(x) for x in vals})
            xpos = [labels.index(fmt_value(x)) for x in vals]
            ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        groups: dict[Any, list[float]] = defaultdict(list)
        for x, y in zip(xpos, ys, strict=True):
            groups[x].append(y)
        xs = sorted(groups)
        several = any(len(v) > 1 for v in groups.values())
        style = ("-" if numeric else "") + ("D" if several or not numeric else "")
        ax.plot(xs, [sum(groups[x]) / len(groups[x]) for x in xs], style, ms=5, lw=1.2,
                color="C1", label="mean" if several else None)
        for done, label in ((True, "runs"), (False, "unfinished (so far)")):
            sel = [(x, y) for x, y, r in zip(xpos, ys, have, strict=True)
                   if (r["status"] == "done") == done]
            if sel:
                ax.scatter(*zip(*sel, strict=True), s=22, zorder=3, label=label, color="C0",
                           facecolors="C0" if done else "none")
        if numeric and _log_axis(key, xs):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # no crowded labels within a decade
        if not have:
            ax.text(0.5, 0.5, f"no point has {metric} yet", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_xlabel(key)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if several or any(r["status"] != "done" for r in have):
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)

"""The one matplotlib setup: figures without pyplot's global state, saved atomically as PNG.

Every figure of trainlab (curves, lr-find, sweep plots, image grids, MAE reconstructions) is a
`matplotlib.figure.Figure` made here and written by `save_figure`, so no backend has to be
chosen (Agg draws the PNG) and a crash never leaves half an image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from trainlab.files import atomic_write_bytes

DPI = 110


def new_figure(width_in: float, height_in: float) -> Figure:
    """A blank figure of that size in inches (draw with `fig.subplots(...)`)."""
    return Figure(figsize=(width_in, height_in))


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write `fig` as PNG to `path` atomically; returns the path."""
    path = Path(path)
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    return path


def fmt_value(v: Any, key: str = "") -> str:
    """A config or metric value as a short label: accuracies with 4 decimals, other floats
    with 4 significant digits, lists as JSON, None as '-'."""
    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, float):
        return json.dumps(v) if isinstance(v, list) else str(v)
    if key.endswith(("_acc", "_top5")):
        return f"{v:.4f}"
    return f"{v:.4g}"


def fmt_duration(s: Any) -> str:
    """Seconds as a short duration: 4.2s, 3m05s, 1h02m; '-' when unknown."""
    if not isinstance(s, (int, float)) or isinstance(s, bool):
        return "-"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{s:.1f}s"


def save_grid(rows: list[list[torch.Tensor]], row_labels: list[str], col_labels: list[str],
              out: str | Path, title: str) -> Path:
    """Write a PNG grid of uint8 [C, H, W] images (rows x columns) with labels."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig = new_figure(1.2 * n_cols + 1.5, 1.2 * n_rows + 0.6)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(row):
                img = row[c]
                if img.shape[0] == 1:
                    ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=255)
                else:
                    ax.imshow(img.permute(1, 2, 0).numpy())
            if c == 0:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=8)
            if r == 0 and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out, dpi=100)

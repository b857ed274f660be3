"""`trainlab data inspect`: counts per class and split, image size, mean/std (text).

The pictures (sample grids, augmentation previews) are drawn in `trainlab.report.data`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainlab.data.sources import DataSplits, source_names
from trainlab.data.stats import channel_stats


def spec_overrides(spec: str) -> list[str]:
    """A DATA_SPEC shorthand -> overrides: a data set name, a folder, or an .npz file."""
    if spec in source_names():
        return [f"data.name={spec}"]
    if spec.endswith(".npz"):
        return ["data.name=npz", f"data.root={spec}"]
    if Path(spec).is_dir():  # the folder source says what it needs inside (train/<class>/)
        return ["data.name=folder", f"data.root={spec}"]
    return [f"data.name={spec}"]


def _counts(y: torch.Tensor, k: int) -> list[int]:
    return torch.bincount(y, minlength=k).tolist() if len(y) else [0] * k


def describe(data: DataSplits) -> dict[str, Any]:
    """Counts per class and split, image shape, channels and the train mean/std."""
    k = data.num_classes
    mean, std = channel_stats(data.x_train)
    return {
        "name": data.name,
        "classes": data.class_names,
        "counts": {s: _counts(getattr(data, f"y_{s}"), k) for s in ("train", "val", "test")},
        "channels": data.channels,
        "height": data.height,
        "width": data.width,
        "mean": mean,
        "std": std,
    }


def format_description(d: dict[str, Any]) -> str:
    size = f"{d['height']}x{d['width']}" if d["height"] else "mixed sizes"
    lines = [f"data set {d['name']}: {len(d['classes'])} classes, {d['channels']} channel(s), "
             f"{size}",
             "mean " + ", ".join(f"{m:.4f}" for m in d["mean"]) + "   std "
             + ", ".join(f"{s:.4f}" for s in d["std"]) + "   (train split, pixels in [0, 1])",
             f"{'class':<24} {'train':>8} {'val':>8} {'test':>8}"]
    c = d["counts"]
    for i, name in enumerate(d["classes"]):
        lines.append(f"{name[:24]:<24} {c['train'][i]:>8} {c['val'][i]:>8} {c['test'][i]:>8}")
    lines.append(f"{'total':<24} {sum(c['train']):>8} {sum(c['val']):>8} {sum(c['test']):>8}")
    return "\n".join(lines)

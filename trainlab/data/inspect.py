"""`trainlab data inspect` and `trainlab data preview-augment`: look at data before training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainlab.config.schema import Config
from trainlab.data.sources import DataSplits, ImageFiles, load_data
from trainlab.data.stats import channel_stats


def spec_overrides(spec: str) -> list[str]:
    """A DATA_SPEC shorthand -> overrides: a data set name, a folder, or an .npz file."""
    p = Path(spec)
    if spec.endswith(".npz"):
        return ["data.name=npz", f"data.root={spec}"]
    if p.is_dir() and (p / "train").is_dir():
        return ["data.name=folder", f"data.root={spec}"]
    return [f"data.name={spec}"]


def _images(x: torch.Tensor | ImageFiles, idx: list[int]) -> list[torch.Tensor]:
    """uint8 [C, H, W] images at `idx` from an in-memory tensor or a file-backed split."""
    if isinstance(x, torch.Tensor):
        return [x[i] for i in idx]
    return [x.read(i) for i in idx]


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


def _save_grid(rows: list[list[torch.Tensor]], row_labels: list[str], col_labels: list[str],
               out: Path, title: str) -> Path:
    """Write a PNG grid of uint8 [C, H, W] images (rows x columns) with labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.2 * n_cols + 1.5, 1.2 * n_rows + 0.6),
                             squeeze=False)
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out


def sample_grid(data: DataSplits, out: Path, per_class: int = 8, seed: int = 0) -> Path:
    """PNG grid: one row per class, `per_class` random training images each."""
    g = torch.Generator().manual_seed(seed)
    rows, labels = [], []
    for k, name in enumerate(data.class_names):
        members = torch.nonzero(data.y_train == k).flatten()
        pick = members[torch.randperm(len(members), generator=g)[:per_class]].tolist()
        rows.append(_images(data.x_train, pick))
        labels.append(name[:16])
    return _save_grid(rows, labels, [], out, f"{data.name}: training samples per class")


def inspect_data(cfg: Config, out: Path) -> tuple[str, Path]:
    """Describe the data set of `cfg` and write its sample grid; returns (text, png path)."""
    data = load_data(cfg.data)
    text = format_description(describe(data))
    return text, sample_grid(data, out, seed=cfg.run.seed)


def preview_augment(cfg: Config, out: Path, n_images: int = 8, n_views: int = 7) -> Path:
    """PNG grid: `n_images` training images (rows), the original then `n_views` augmented views
    exactly as the training loader produces them (views = successive epochs)."""
    from trainlab.engine.parts import build_parts, train_loader_for

    parts = build_parts(cfg)
    g = torch.Generator().manual_seed(cfg.run.seed)
    n = min(n_images, len(parts.data.y_train))
    idx = torch.randperm(len(parts.data.y_train), generator=g)[:n].tolist()
    loader = train_loader_for(cfg, parts, subset=idx)
    mean = torch.tensor(parts.mean).view(1, -1, 1, 1)
    std = torch.tensor(parts.std).view(1, -1, 1, 1)
    originals = _images(parts.data.x_train, idx)
    views: list[torch.Tensor] = []
    for v in range(n_views):
        xb = torch.cat([b[0].cpu() for b in loader.epoch(v)])  # [n, C, H, W] normalized
        views.append((xb * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8))
    rows = [[originals[i], *[views[v][i] for v in range(n_views)]] for i in range(n)]
    names = parts.data.class_names
    labels = [names[int(parts.data.y_train[i])][:16] for i in idx]
    cols = ["original", *[f"view {v + 1}" for v in range(n_views)]]
    return _save_grid(rows, labels, cols, out, f"{parts.data.name}: training augmentation")

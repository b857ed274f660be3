"""Pictures of data: a sample grid per class, and training augmentation previews."""

from __future__ import annotations

from pathlib import Path

import torch

from trainlab.config.schema import Config
from trainlab.data.inspect import describe, format_description
from trainlab.data.pipeline import load_bundle
from trainlab.data.sources import DataSplits, ImageFiles, load_data
from trainlab.dist.setup import resolve_device
from trainlab.report.figures import save_grid


def images_at(x: torch.Tensor | ImageFiles, idx: list[int]) -> list[torch.Tensor]:
    """uint8 [C, H, W] images at `idx` from an in-memory tensor or a file-backed split."""
    if isinstance(x, torch.Tensor):
        return [x[i] for i in idx]
    return [x.read(i) for i in idx]


MAX_ROWS = 20  # classes shown in a sample grid (the text table lists them all)


def sample_grid(data: DataSplits, out: Path, per_class: int = 8, seed: int = 0) -> Path:
    """PNG grid: one row per class that has training images (the first MAX_ROWS of them),
    `per_class` random training images each."""
    g = torch.Generator().manual_seed(seed)
    rows, labels = [], []
    present = torch.unique(data.y_train).tolist()
    shown = present[:MAX_ROWS]
    for k in shown:
        name = data.class_names[k]
        members = torch.nonzero(data.y_train == k).flatten()
        pick = members[torch.randperm(len(members), generator=g)[:per_class]].tolist()
        rows.append(images_at(data.x_train, pick))
        labels.append(name[:16])
    more = f" (first {len(shown)} of {len(present)} classes)" if len(present) > len(shown) else ""
    return save_grid(rows, labels, [], out, f"{data.name}: training samples per class{more}")


def preview_augment(cfg: Config, out: Path, n_images: int = 8, n_views: int = 7) -> Path:
    """PNG grid: `n_images` training images (rows), the original then `n_views` augmented views
    exactly as the training loader produces them (views = successive epochs)."""
    bundle = load_bundle(cfg.data, resolve_device(cfg.run.device))
    y_train = bundle.data.y_train
    g = torch.Generator().manual_seed(cfg.run.seed)
    n = min(n_images, len(y_train))
    idx = torch.randperm(len(y_train), generator=g)[:n].tolist()
    loader = bundle.train_loader(n, cfg.run.seed, subset=idx)
    mean = torch.tensor(bundle.mean).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std).view(1, -1, 1, 1)
    originals = images_at(bundle.data.x_train, idx)
    views: list[torch.Tensor] = []
    for v in range(n_views):
        xb = torch.cat([b[0].cpu() for b in loader.epoch(v)])  # [n, C, H, W] normalized
        views.append((xb * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8))
    rows = [[originals[i], *[views[v][i] for v in range(n_views)]] for i in range(n)]
    names = bundle.data.class_names
    labels = [names[int(y_train[i])][:16] for i in idx]
    cols = ["original", *[f"view {v + 1}" for v in range(n_views)]]
    return save_grid(rows, labels, cols, out, f"{bundle.data.name}: training augmentation")


def inspect_data(cfg: Config, out: Path) -> tuple[str, Path]:
    """Describe the data set of `cfg` and write its sample grid; returns (text, png path)."""
    data = load_data(cfg.data)
    return format_description(describe(data)), sample_grid(data, out, seed=cfg.run.seed)

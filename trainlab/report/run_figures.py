"""The figures of a run's page: training curves, confusion matrices, the reliability diagram
and a grid of misclassified test images. Each draws on `new_figure` and writes a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from trainlab.report.classify import Calibration, row_normalized
from trainlab.report.figures import new_figure, save_figure


def _series(records: list[dict[str, Any]], kind: str, x: str, y: str) -> tuple[list, list]:
    pts = [(r[x], r[y]) for r in records if r.get("kind") == kind
           and isinstance(r.get(x), (int, float)) and isinstance(r.get(y), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def curves_figure(records: list[dict[str, Any]], path: Path, title: str) -> Path:
    """2 x 2: train/val loss vs epoch, train/val accuracy vs epoch (kNN accuracy too when
    logged), train loss vs step, lr vs step."""
    fig = new_figure(11, 7)
    (a_loss, a_acc), (a_step, a_lr) = fig.subplots(2, 2)
    for ax, metric, label in ((a_loss, "loss", "loss"), (a_acc, "acc", "accuracy")):
        drawn = False
        for split, style in (("train", "o-"), ("val", "s-")):
            xs, ys = _series(records, "epoch", "epoch", f"{split}_{metric}")
            if xs:
                ax.plot(xs, ys, style, ms=3, label=split)
                drawn = True
        if metric == "acc":
            xs, ys = _series(records, "epoch", "epoch", "knn_acc")
            if xs:
                ax.plot(xs, ys, "^-", ms=3, label="kNN (val)")
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, f"no {label} logged", ha="center", va="center",
                    transform=ax.transAxes)
        else:
            ax.legend(fontsize=8)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(f"{label} per epoch", fontsize=10)
        ax.grid(alpha=0.3)
    xs, ys = _series(records, "train", "step", "loss")
    what = f"train loss every run.log_every steps ({len(xs)} points)"
    if not xs:  # a short run logs no window: the epoch means, at their last step
        xs, ys = _series(records, "epoch", "step", "train_loss")
        what = "train loss per epoch (no step records: lower run.log_every)"
    a_step.plot(xs, ys, "o-" if len(xs) < 30 else "-", ms=3, lw=1)
    a_step.set(xlabel="optimizer step", ylabel="train loss")
    a_step.set_title(what, fontsize=10)
    xs, ys = _series(records, "train", "step", "lr")
    if not xs:
        xs, ys = _series(records, "epoch", "step", "lr")
    a_lr.plot(xs, ys, lw=1, color="C2")
    a_lr.set(xlabel="optimizer step", ylabel="learning rate")
    a_lr.set_title("learning rate", fontsize=10)
    for ax in (a_step, a_lr):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def confusion_figure(cm: Tensor, names: list[str], path: Path) -> Path:
    """Counts (left) and row-normalized (right, recall on the diagonal), true rows x
    predicted columns, numbers written in the cells when they fit."""
    k = cm.shape[0]
    side = min(max(4.0, 0.45 * k + 2), 12)
    fig = new_figure(2 * side + 1, side)
    axes = fig.subplots(1, 2)
    for ax, mat, title, fmt in ((axes[0], cm.double(), "counts", "{:.0f}"),
                                (axes[1], row_normalized(cm), "row-normalized (recall)",
                                 "{:.2f}")):
        m = mat.numpy()
        im = ax.imshow(m, cmap="Blues", vmin=0)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ticks = range(k)
        ax.set_xticks(ticks, names if k <= 40 else [""] * k, rotation=90 if k > 10 else 0,
                      fontsize=7)
        ax.set_yticks(ticks, names if k <= 40 else [""] * k, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=10)
        if k <= 20:
            top = m.max() or 1
            for t in range(k):
                for p in range(k):
                    if m[t, p]:
                        ax.text(p, t, fmt.format(m[t, p]), ha="center", va="center",
                                fontsize=7, color="white" if m[t, p] > 0.6 * top else "black")
    fig.suptitle("Confusion matrix, test split", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def reliability_figure(cal: Calibration, path: Path) -> Path:
    """Accuracy against confidence per bin (bars; the diagonal = perfectly calibrated), and
    how many test images fall in each bin."""
    fig = new_figure(9, 4)
    ax, hist = fig.subplots(1, 2)
    edges = cal.edges.numpy()
    width = edges[1:] - edges[:-1]
    used = (cal.count > 0).numpy()
    ax.bar(edges[:-1][used], cal.accuracy.numpy()[used], width=width[used], align="edge",
           edgecolor="k", color="C0", alpha=0.8, label="accuracy")
    lo = torch.minimum(cal.confidence, cal.accuracy).numpy()[used]
    ax.bar(edges[:-1][used], (cal.confidence - cal.accuracy).abs().numpy()[used], bottom=lo,
           width=width[used], align="edge", color="C3", alpha=0.35, hatch="//",
           edgecolor="C3", label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max probability)", ylabel="accuracy")
    ax.set_title(f"Reliability diagram: ECE {cal.ece:.4f}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    hist.bar(edges[:-1], cal.count.numpy(), width=width, align="edge", color="0.6",
             edgecolor="k")
    hist.set(xlim=(0, 1), xlabel="confidence", ylabel="test images")
    hist.set_title("images per confidence bin", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def image_grid_figure(images: Tensor, captions: list[str], path: Path, title: str,
                      columns: int = 8) -> Path:
    """uint8 [B, C, H, W] images in a grid, each with its caption above."""
    n = images.shape[0]
    rows = max(1, -(-n // columns))
    fig = new_figure(1.45 * columns, 1.65 * rows + 0.5)
    axes = fig.subplots(rows, columns, squeeze=False)
    for i in range(rows * columns):
        ax = axes[i // columns][i % columns]
        ax.axis("off")
        if i < n:
            img = images[i].permute(1, 2, 0).numpy()
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255)
            else:
                ax.imshow(img)
            ax.set_title(captions[i], fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def val_curves_figure(curves: list[tuple[str, list[int], list[float]]], ylabel: str,
                      path: Path, title: str) -> Path:
    """One line per sweep point: (label, epochs, values)."""
    fig = new_figure(9, 4.8)
    ax = fig.subplots()
    for label, xs, ys in curves:
        ax.plot(xs, ys, "o-" if len(xs) < 30 else "-", ms=2.5, lw=1.2, label=label)
    if not curves:
        ax.text(0.5, 0.5, "no point has logged an epoch yet", ha="center", va="center",
                transform=ax.transAxes)
    elif len(curves) <= 20:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)

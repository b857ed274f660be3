"""Where a ViT looks: last-layer cls-token attention and attention rollout (Abnar & Zuidema,
2020), as heat maps over the patch grid, and a figure overlaying them on test images.

Rollout: average each layer's attention A_l [L, L] over heads, add the identity for the
residual connection and renormalize rows, A'_l = (A_l + I) / rowsum; multiply through the
layers, R = A'_n ... A'_1; the cls row of R, without the cls column, says how much each patch
flows into the cls token.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from trainlab.report.figures import new_figure, save_figure


def rollout(maps: list[Tensor]) -> Tensor:
    """maps: per layer [B, heads, L, L] (rows summing to 1, token 0 = cls) -> [B, L - 1]:
    the rollout's cls row over the patch tokens, scaled to sum to 1."""
    b, _, n, _ = maps[0].shape
    eye = torch.eye(n, dtype=torch.float64, device=maps[0].device)
    r = eye.expand(b, n, n).clone()
    for a in maps:
        a = a.double().mean(dim=1) + eye  # [B, L, L]
        a = a / a.sum(dim=-1, keepdim=True)
        r = a @ r
    cls = r[:, 0, 1:]
    return (cls / cls.sum(dim=-1, keepdim=True)).float()


def last_layer_cls(maps: list[Tensor]) -> Tensor:
    """[B, L - 1]: the last layer's cls-token attention to each patch, mean over heads,
    scaled to sum to 1."""
    cls = maps[-1].double().mean(dim=1)[:, 0, 1:]
    return (cls / cls.sum(dim=-1, keepdim=True)).float()


def to_grid(weights: Tensor, grid: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """[B, N] patch weights (row-major grid) -> [B, H, W] heat maps in [0, 1] (nearest)."""
    m = weights.view(-1, 1, *grid)
    m = m / m.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-12)
    return F.interpolate(m, size=size, mode="nearest")[:, 0]


def attention_figure(images: Tensor, cls_maps: Tensor, roll_maps: Tensor, titles: list[str],
                     path: Path) -> Path:
    """Rows: image, last-layer cls attention over it, rollout over it; one column per image.
    images uint8 [B, C, H, W]; maps [B, H, W] in [0, 1]."""
    n = images.shape[0]
    fig = new_figure(1.6 * n + 1.2, 5.2)
    axes = fig.subplots(3, n, squeeze=False)
    rows = ("image", "last-layer\ncls attention", "attention\nrollout")
    for j in range(n):
        img = images[j].permute(1, 2, 0).numpy()
        grey = img.shape[-1] == 1
        for i in range(3):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(img[..., 0] if grey else img, cmap="gray" if grey else None, vmin=0,
                      vmax=255)
            if i:
                ax.imshow((cls_maps if i == 1 else roll_maps)[j].numpy(), cmap="inferno",
                          alpha=0.6, vmin=0, vmax=1)
            if j == 0:
                ax.set_ylabel(rows[i], fontsize=8)
        axes[0][j].set_title(titles[j], fontsize=7)
    fig.suptitle("Where the ViT looks (brighter = more attention)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)

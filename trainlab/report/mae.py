"""MAE reconstructions as pictures: `<run_dir>/mae/epoch_XXX.png` at every evaluation.

One row per validation image, four columns: the original, the masked input the encoder sees
(removed patches grey), the decoder's prediction of every patch, and the prediction with the
visible patches pasted back (what MAE papers show). Masks are fixed (seeded), so the pictures
of successive epochs compare like for like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from trainlab.data.pipeline import DataBundle
from trainlab.report.figures import save_grid

COLUMNS = ["original", "masked", "prediction", "pred. + visible"]
N_IMAGES = 6
MIN_SIDE_PX = 64  # small images are enlarged (nearest) to at least this side


def to_uint8(x: Tensor, mean: list[float], std: list[float]) -> Tensor:
    """Normalized images [B, C, H, W] -> uint8 [B, C, H', W'] on the CPU, enlarged to at least
    MIN_SIDE_PX (nearest neighbour, integer factor)."""
    c = x.shape[1]
    m = torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1)
    img = (x.detach().float().cpu() * s + m).clamp(0, 1)
    factor = max(1, -(-MIN_SIDE_PX // max(x.shape[-2:])))
    if factor > 1:
        img = torch.nn.functional.interpolate(img, scale_factor=factor, mode="nearest")
    return img.mul(255).round().to(torch.uint8)


def mae_panels(method: Any, imgs: Tensor) -> list[Tensor]:
    """The four columns for normalized imgs [B, C, H, W]: each normalized [B, C, H, W]."""
    recon, mask = method.reconstruct(imgs)  # [B, C, H, W], [B, 1, H, W] (1 = removed)
    grey = torch.zeros_like(imgs)  # 0 in normalized units: the data's mean colour
    masked = imgs * (1 - mask) + grey * mask
    pasted = imgs * (1 - mask) + recon * mask
    return [imgs, masked, recon, pasted]


def write_mae_grid(method: Any, imgs: Tensor, mean: list[float], std: list[float], out: Path,
                   title: str) -> Path:
    """Write the PNG grid for imgs [B, C, H, W] to `out` (atomically); returns `out`."""
    was_training = method.training
    method.eval()
    try:
        cols = [to_uint8(p, mean, std) for p in mae_panels(method, imgs)]
    finally:
        method.train(was_training)
    rows = [[col[i] for col in cols] for i in range(imgs.shape[0])]
    return save_grid(rows, [""] * len(rows), COLUMNS, out, title)


class MaeVisuals:
    """Epoch hook: rank 0 writes `<run_dir>/mae/epoch_XXX.png` for the first val images."""

    def __init__(self, method: Any, data: DataBundle, run_dir: Path, is_main: bool) -> None:
        self.method, self.run_dir, self.is_main = method, Path(run_dir), is_main
        self.mean, self.std = data.mean, data.std
        self.imgs: Tensor | None = None
        if is_main:
            split = "val" if len(data.data.y_val) else "test"
            loader = data.full_loader(split, N_IMAGES)
            self.imgs = next(iter(loader.epoch(0)))[0] if len(loader) else None

    def __call__(self, epoch: int) -> dict[str, float]:
        """epoch: 1-based. Writes the picture; logs no metric."""
        if self.is_main and self.imgs is not None:
            out = self.run_dir / "mae" / f"epoch_{epoch:03d}.png"
            write_mae_grid(self.method, self.imgs, self.mean, self.std, out,
                           f"MAE reconstructions, epoch {epoch}")
        return {}


def mae_visuals_hook(run: Any, run_dir: Path, is_main: bool) -> MaeVisuals | None:
    """Epoch-hook factory for `engine.run.train`: MAE pictures for mae runs, else None."""
    if run.cfg.method.name != "mae":
        return None
    return MaeVisuals(run.method, run.data, run_dir, is_main)

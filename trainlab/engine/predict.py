"""Class probabilities of a saved classifier: over a split (reports) or over image files
(`trainlab predict`), with exactly the preprocessing evaluation uses.

Evaluation sees uint8 images converted at load (data.channels, data.image_size), resized and
centre-cropped to the run's size when they differ (the file-backed eval pipeline), then
normalized with the run's saved mean/std on the device. `predict_files` decodes files with the
same conversion (`decode_image`) and feeds them through the same in-memory loader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from trainlab.config.load import merge_overrides
from trainlab.config.schema import Config
from trainlab.data.convert import decode_image
from trainlab.data.file_loader import Pipeline, build_transform
from trainlab.data.pipeline import DataBundle, make_loader
from trainlab.data.sources.folder_layout import IMAGE_EXTENSIONS
from trainlab.dist.env import DistEnv
from trainlab.dist.setup import resolve_device
from trainlab.engine.checkpoint import load_run
from trainlab.engine.checks import check_config
from trainlab.engine.evaluate import autocast
from trainlab.engine.pretrained import load_method_state
from trainlab.errors import ConfigError, DataError
from trainlab.methods import Method, build_method
from trainlab.models import ImageSpec, build_model
from trainlab.models.state import load_matching

CLASSIFIERS = ("supervised", "linear_probe", "finetune")  # methods whose model outputs logits


@dataclass
class SavedModel:
    """A run's classifier with what preprocessing needs, loaded without its data set."""

    cfg: Config
    path: Path  # the checkpoint
    method: Method
    mean: list[float]
    std: list[float]
    class_names: list[str]
    channels: int
    height: int
    width: int

    @property
    def model(self) -> nn.Module:
        return self.method.model

    @property
    def device(self) -> torch.device:
        return next(self.method.parameters()).device


def load_classifier_run(path: str | Path, which: str = "last", overrides: Sequence[str] = ()
                        ) -> tuple[Config, dict[str, Any], Path]:
    """load_run + overrides, checked; ConfigError for a pretraining run (mae, simclr): it has
    no classifier to predict with or export."""
    cfg, ckpt, p = load_run(path, which)
    cfg = merge_overrides(cfg, list(overrides))
    check_config(cfg)
    if cfg.method.name not in CLASSIFIERS:
        raise ConfigError(
            f"{p} was trained with method.name={cfg.method.name}, which learns features, not "
            f"classes: there is nothing to predict or export. Train a linear probe or finetune "
            f"on it (method.name=linear_probe model.init={Path(path)}) and use that run.")
    return cfg, ckpt, p


def load_saved_model(path: str | Path, which: str = "last", overrides: Sequence[str] = (),
                     device: torch.device | None = None) -> SavedModel:
    """A run folder or checkpoint -> its model in eval mode (no data is read). ConfigError for
    a pretraining run (mae, simclr): it has no classifier to predict with."""
    cfg, ckpt, p = load_classifier_run(path, which, overrides)
    d = ckpt["data"]
    device = device or resolve_device(cfg.run.device, DistEnv())
    spec = ImageSpec(channels=d["channels"], height=d["height"], width=d["width"],
                     num_classes=d["num_classes"])
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model, spec).to(device)
    method = build_method(cfg, model)
    bad = load_matching(method.model, ckpt["model"])
    if bad:
        raise ConfigError(f"Checkpoint {p} does not match its own config ({bad.describe()}).")
    load_method_state(method, ckpt, p)
    method.to(device).eval()
    return SavedModel(cfg, p, method, list(d["mean"]), list(d["std"]), list(d["class_names"]),
                      d["channels"], d["height"], d["width"])


@torch.no_grad()
def predict_probs(model: nn.Module, loader: Any, precision: str = "fp32") -> tuple[Tensor, Tensor]:
    """Softmax probabilities of every image of `loader` (one pass, eval mode, in order).

    Returns (probs float32 [N, K], labels int64 [N]) on the CPU.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    probs, labels = [], []
    for batch in loader.epoch(0):  # (images, labels, sample keys)
        x, y = batch[0], batch[1]
        with autocast(device, precision):
            logits = model(x)
        probs.append(logits.float().softmax(dim=1).cpu())
        labels.append(y.cpu())
    model.train(was_training)
    if not probs:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.int64)
    return torch.cat(probs), torch.cat(labels)


def predict_split(model: nn.Module, data: DataBundle, split: str,
                  batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """(probs [N, K], labels [N]) of a whole split for this process alone (all of it, in
    order; not split across ranks)."""
    return predict_probs(model, data.full_loader(split, batch_size))


def eval_transform(height: int, width: int):
    """uint8 [C, h, w] -> uint8 [C, height, width]: eval's resize of the shorter side and
    centre crop (the identity for images of that size)."""
    t = build_transform(Pipeline(size=(height, width), random=False), None)
    return lambda img: img if tuple(img.shape[-2:]) == (height, width) else t(img)


def split_images(data: DataBundle, split: str, indices: Sequence[int]) -> Tensor:
    """uint8 [n, C, H, W] images `indices` of a split as evaluation sees them (before
    normalization), on the CPU."""
    x, _ = data.split(split)
    if isinstance(x, Tensor):
        return x[list(indices)].cpu()
    fit = eval_transform(data.height, data.width)
    return torch.stack([fit(x.read(int(i))) for i in indices])


def normalize(data_mean: list[float], data_std: list[float], x_u8: Tensor) -> Tensor:
    """uint8 [B, C, H, W] -> float32 normalized as the loaders do: (x / 255 - mean) / std."""
    c = x_u8.shape[1]
    m = torch.tensor(data_mean, dtype=torch.float32, device=x_u8.device).view(1, c, 1, 1)
    s = torch.tensor(data_std, dtype=torch.float32, device=x_u8.device).view(1, c, 1, 1)
    return (x_u8.float() / 255.0 - m) / s


# ---------------------------------------------------------------------------- image files
def find_images(paths: Sequence[str | Path]) -> list[Path]:
    """Files given, and the image files under folders given (recursive, sorted). DataError for
    a path that does not exist or a folder without images."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and f.name.lower().endswith(IMAGE_EXTENSIONS)
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise DataError(f"Folder {p} holds no images ({', '.join(IMAGE_EXTENSIONS)}, "
                                f"searched recursively); give image files or another folder.")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder; give image files or folders of "
                            f"images to predict.")
    return out


def read_images(files: Sequence[Path], saved: SavedModel,
                skip_bad: bool) -> tuple[list[Path], Tensor, list[tuple[Path, str]]]:
    """Decode `files` as evaluation would see them -> (kept paths, uint8 [N, C, H, W],
    skipped (path, reason)). A file that cannot be decoded is a DataError naming it, or with
    `skip_bad` is skipped and listed."""
    fit = eval_transform(saved.height, saved.width)
    kept, imgs, bad = [], [], []
    for f in files:
        try:
            arr = decode_image(f, saved.channels, saved.cfg.data.image_size)
        except (OSError, SyntaxError, ValueError) as e:
            reason = "permission denied" if isinstance(e, PermissionError) else (
                str(e).splitlines()[0] if str(e) else type(e).__name__)
            if not skip_bad:
                raise DataError(f"Cannot read image {f}: {reason}. Replace or remove it, or "
                                f"add --skip-bad-files to skip unreadable files (they are "
                                f"counted).") from None
            bad.append((f, reason))
            continue
        kept.append(f)
        imgs.append(fit(torch.from_numpy(arr)))
    x = torch.stack(imgs) if imgs else torch.empty(0, saved.channels, saved.height, saved.width,
                                                   dtype=torch.uint8)
    return kept, x, bad


def predict_images(saved: SavedModel, x_u8: Tensor, batch_size: int = 256) -> Tensor:
    """uint8 [N, C, H, W] -> probabilities [N, K] (CPU), normalized exactly as evaluation."""
    y = torch.zeros(len(x_u8), dtype=torch.int64)
    loader = make_loader(x_u8, y, batch_size, saved.mean, saved.std, saved.cfg.data,
                         saved.device, file_backed=False)
    return predict_probs(saved.model, loader)[0]


def topk_rows(probs: Tensor, class_names: list[str], k: int) -> list[list[tuple[str, float]]]:
    """probs [N, K] -> per row the k most probable (class name, probability), best first."""
    k = min(k, probs.shape[1])
    p, i = probs.topk(k, dim=1)
    return [[(class_names[c], float(v)) for c, v in zip(ir.tolist(), pr.tolist(), strict=True)]
            for ir, pr in zip(i, p, strict=True)]

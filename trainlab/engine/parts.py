"""Building blocks of a run from a config: device, data, normalization, model, loaders."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainlab.config.load import config_from_dict
from trainlab.config.schema import Config, DataConfig
from trainlab.data.augment import AugmentSpec, resolve_augment
from trainlab.data.file_loader import FileLoader, resolve_pipeline
from trainlab.data.loader import DeviceLoader
from trainlab.data.mix import MixSpec, resolve_mix
from trainlab.data.sources import DataSplits, ImageFiles, load_data
from trainlab.data.stats import channel_stats
from trainlab.dist.env import DistEnv
from trainlab.dist.setup import pick_device
from trainlab.engine.checkpoint import load_checkpoint
from trainlab.errors import ConfigError
from trainlab.models import ImageSpec, build_model

Loader = DeviceLoader | FileLoader


def resolve_device(name: str, env: DistEnv | None = None) -> torch.device:
    """`run.device`: auto picks cuda (cuda:LOCAL_RANK when distributed), then mps, then cpu."""
    env = env or DistEnv()
    if name == "auto":
        if torch.cuda.is_available():
            return pick_device(env, "cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"run.device={name!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device={name!r} but this machine has no usable CUDA GPU; use "
                          f"run.device=cpu (or auto).") from None
    if dev.type == "cuda" and dev.index is None:
        return pick_device(env, "cuda")
    return dev


def make_loader(x: torch.Tensor | ImageFiles, y: torch.Tensor, batch_size: int, mean: list[float],
                std: list[float], data_cfg: DataConfig, device: torch.device, *,
                file_backed: bool, shuffle: bool = False, augment: AugmentSpec | None = None,
                mix: MixSpec | None = None, seed: int = 0, rank: int = 0,
                world_size: int = 1) -> Loader:
    """The in-memory DeviceLoader or the file-backed FileLoader over (x, y).

    `batch_size` is the global batch: with several ranks each takes its slice of every batch.
    Passing `augment` (training) also turns on the file-backed pipeline's random transforms.
    """
    common = dict(shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, mix=mix)
    pipeline = resolve_pipeline(data_cfg, tuple(x.shape), train=augment is not None)
    if file_backed:
        return FileLoader(x, y, batch_size, mean, std, pipeline=pipeline, device=device,
                          num_workers=data_cfg.num_workers, **common)
    if pipeline.auto_augment != "none" or pipeline.random_erasing > 0:
        raise ConfigError(
            f"data.auto_augment={pipeline.auto_augment} / data.random_erasing="
            f"{pipeline.random_erasing:g} run in the file-backed pipeline only, but this data "
            f"set is held in memory. Set data.in_memory=false to use them (or leave them at "
            f"none / 0 for the on-device augmentation).")
    return DeviceLoader(x.to(device), y.to(device), batch_size, mean, std, augment=augment,
                        **common)


@dataclass
class Parts:
    """Everything built from a config that both `train` and `eval` need."""

    data: DataSplits
    spec: ImageSpec
    mean: list[float]
    std: list[float]
    model: torch.nn.Module
    device: torch.device
    data_cfg: DataConfig = field(default_factory=DataConfig)
    env: DistEnv = field(default_factory=DistEnv)

    def file_backed(self, split: str) -> bool:
        """True when `split` loads through DataLoader workers (ImageFiles, or
        data.in_memory=false); otherwise it lives on the device as uint8."""
        x = getattr(self.data, f"x_{split}")
        return isinstance(x, ImageFiles) or self.data_cfg.in_memory is False

    def loader(self, split: str, batch_size: int, **kw: Any) -> Loader:
        """Batches of `split` for this rank (see `make_loader` for the keywords)."""
        x, y = getattr(self.data, f"x_{split}"), getattr(self.data, f"y_{split}")
        return make_loader(x, y, batch_size, self.mean, self.std, self.data_cfg, self.device,
                           file_backed=self.file_backed(split), rank=self.env.rank,
                           world_size=self.env.world_size, **kw)

    def data_info(self) -> dict[str, Any]:
        s = self.spec
        return {"name": self.data.name, "mean": self.mean, "std": self.std,
                "class_names": self.data.class_names, "channels": s.channels,
                "height": s.height, "width": s.width, "num_classes": s.num_classes}


def build_parts(cfg: Config, stats: tuple[list[float], list[float]] | None = None,
                env: DistEnv | None = None, device: torch.device | None = None) -> Parts:
    """Load data, compute (or reuse) normalization stats, build the model on the device."""
    env = env or DistEnv()
    device = device or resolve_device(cfg.run.device, env)
    data = load_data(cfg.data)
    mean, std = stats if stats is not None else channel_stats(data.x_train)
    h = cfg.data.image_size or data.height
    w = cfg.data.image_size or data.width
    if not h or not w:
        raise ConfigError(
            f"The images of data.name={data.name} have different sizes; set data.image_size "
            f"(for example data.image_size=224) so batches and the model have one size.")
    spec = ImageSpec(channels=data.channels, height=h, width=w, num_classes=data.num_classes)
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model, spec).to(device)
    return Parts(data, spec, list(mean), list(std), model, device, cfg.data, env)


def train_loader_for(cfg: Config, parts: Parts, subset: list[int] | None = None) -> Loader:
    """The training loader (augmentation and mixing on). With `subset`: those training images
    only, in that order, one batch per epoch (for previews: epoch e = augmented view e)."""
    aug = resolve_augment(cfg.data)
    mix = resolve_mix(cfg.data, parts.spec.num_classes)
    if subset is None:
        return parts.loader("train", cfg.train.batch_size, shuffle=True, augment=aug,
                            seed=cfg.run.seed, mix=mix)
    x = parts.data.x_train
    xs = x[subset] if isinstance(x, torch.Tensor) else torch.stack([x.read(i) for i in subset])
    return make_loader(xs, parts.data.y_train[subset], len(subset), parts.mean, parts.std,
                       parts.data_cfg, parts.device, file_backed=parts.file_backed("train"),
                       augment=aug, mix=mix, seed=cfg.run.seed)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_state(model: torch.nn.Module, sd: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Load `sd` into `model` if every key and shape fits; else (missing or misshaped,
    unexpected) key lists and the model is untouched."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if missing or unexpected or bad_shape:
        return missing + bad_shape, unexpected
    model.load_state_dict(sd)
    return [], []


def load_run(path: str | Path, which: str = "last") -> tuple[Config, dict[str, Any], Path]:
    """A checkpoint file or run dir -> (its config, the checkpoint, the checkpoint path)."""
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / f"{which}.pt"
        if not p.is_file():
            raise ConfigError(f"No checkpoint {p}: is '{path}' a trainlab run folder that trained "
                              f"at least one epoch?")
    ckpt = load_checkpoint(p)
    if "config" not in ckpt or "data" not in ckpt:
        raise ConfigError(f"'{p}' is not a trainlab checkpoint (no config/data inside).")
    return config_from_dict(ckpt["config"], f"checkpoint {p}"), ckpt, p

"""The one assembly: a validated Config -> data, model, method, optimizer, schedule, trainer.

Training, lr-find, evaluation, kNN and the benchmarks all build through here, in a fixed order
(so seeded weights repeat): data (with the checkpoint's or the pretrained run's normalization),
model + pretrained encoder, SyncBN / channels_last, method, optimizer, GradScaler, schedule,
EMA, the checkpoint's state when resuming, then the DDP / compile wrappers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from trainlab.config.schema import Config
from trainlab.data.keys import rank_seed
from trainlab.data.pipeline import DataBundle, Loader, load_bundle
from trainlab.dist.env import DistEnv
from trainlab.dist.setup import resolve_device
from trainlab.engine.checkpoint import Checkpointer
from trainlab.engine.ema import EMA
from trainlab.engine.pretrained import (
    Pretrained,
    load_encoder,
    load_method_state,
    load_pretrained,
)
from trainlab.engine.sinks import Sinks
from trainlab.engine.trainer import EpochHook, LoopSettings, Optimization, Trainer
from trainlab.errors import ConfigError
from trainlab.methods import Method, build_method
from trainlab.models import ImageSpec, build_model
from trainlab.models.state import load_matching
from trainlab.optim.factory import build_optimizer
from trainlab.optim.schedule import build_schedule


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model_for(cfg: Config, bundle: DataBundle) -> torch.nn.Module:
    """The configured model for the bundle's image size and classes, seeded by run.seed, on
    the bundle's device."""
    spec = ImageSpec(channels=bundle.channels, height=bundle.height, width=bundle.width,
                     num_classes=bundle.num_classes)
    torch.manual_seed(cfg.run.seed)
    return build_model(cfg.model, spec).to(bundle.device)


def load_data_and_model(cfg: Config, stats: tuple[list[float], list[float]] | None = None,
                        env: DistEnv | None = None,
                        device: torch.device | None = None) -> tuple[DataBundle, torch.nn.Module]:
    """Data (normalized with `stats` when given) and a freshly built model on the device."""
    env = env or DistEnv()
    device = device or resolve_device(cfg.run.device, env)
    bundle = load_bundle(cfg.data, device, stats, env.rank, env.world_size)
    return bundle, build_model_for(cfg, bundle)


@dataclass
class Assembly:
    """Everything a run trains with, built from one config."""

    cfg: Config
    env: DistEnv
    data: DataBundle
    model: torch.nn.Module
    init: Pretrained | None  # the encoder loaded from model.init, or None
    opt: Optimization  # method, optimizer, schedule, scaler, EMA, the train module
    train_loader: Loader
    steps_per_epoch: int  # optimizer steps per epoch (micro-batches / accum_steps, rounded up)

    @property
    def method(self) -> Method:
        return self.opt.method

    @property
    def device(self) -> torch.device:
        return self.data.device


def assemble(cfg: Config, env: DistEnv, device: torch.device,
             ckpt: dict[str, Any] | None = None, ckpt_path: Path | None = None) -> Assembly:
    """Build a run's parts from `cfg`; with `ckpt`, restore them to where that run stopped.

    The pretrained encoder (model.init) is loaded only when not resuming: the checkpoint then
    holds every weight.
    """
    init = (load_pretrained(cfg.model.init, finished=True) if cfg.model.init and ckpt is None
            else None)
    seed_everything(cfg.run.seed)
    stats = (ckpt["data"]["mean"], ckpt["data"]["std"]) if ckpt else None
    bundle, model = load_data_and_model(cfg, stats or (init.stats_for(cfg) if init else None),
                                        env, device)
    if init is not None:
        load_encoder(model, init, cfg.model.name)
    t = cfg.train
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = t.tf32
        torch.backends.cudnn.allow_tf32 = t.tf32
    if t.sync_bn and env.distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    method = build_method(cfg, model)
    optimizer = build_optimizer(cfg.optim, method)  # the model and the method's own heads
    scaler = torch.amp.GradScaler(device.type) if t.precision == "fp16" else None
    train_loader = bundle.train_loader(t.batch_size, cfg.run.seed)
    # The weights above are built from run.seed on every rank; from here each rank's global
    # generator (dropout, drop-path) gets its own seed, so ranks drop different units. Each
    # rank's state is checkpointed, so a resume is exact; a 1-rank run repeats under its seed.
    # Dropout masks are per rank, not per sample: runs at different world sizes differ.
    torch.manual_seed(rank_seed(cfg.run.seed, env.rank))
    steps_per_epoch = -(-len(train_loader) // t.accum_steps)
    schedule = build_schedule(cfg.sched, cfg.optim.lr, steps_per_epoch, t.epochs)
    ema = EMA(method.model, t.ema_decay) if t.ema_decay > 0 else None
    if ckpt is not None:
        restore(ckpt, ckpt_path or Path("checkpoint"), method, optimizer, ema, scaler)
    train_module: torch.nn.Module = method
    if env.distributed:
        train_module = DDP(method, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        train_module = torch.compile(train_module)
    ema_method = build_method(cfg, ema.module) if ema is not None else None
    opt = Optimization(method, optimizer, schedule, scaler, train_module, ema, ema_method)
    return Assembly(cfg, env, bundle, method.model, init, opt, train_loader, steps_per_epoch)


def restore(ckpt: dict[str, Any], path: Path, method: Method, optimizer: Any, ema: EMA | None,
            scaler: Any) -> None:
    """Load a checkpoint's model, optimizer, method, EMA and scaler state."""
    bad = load_matching(method.model, ckpt["model"])
    if bad:
        raise ConfigError(
            f"Checkpoint {path} does not fit model.name={ckpt['config']['model']['name']!r} as "
            f"configured now ({bad.describe()}). Resume with the same model settings as the "
            f"saved run (see its config.yaml).")
    optimizer.load_state_dict(ckpt["optimizer"])
    load_method_state(method, ckpt, path)
    if ema is not None:
        ema.load_state_dict(ckpt["ema"] if "ema" in ckpt else ckpt["model"])
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])


def build_trainer(cfg: Config, opt: Optimization, train_loader: Any, sinks: Sinks, *,
                  val_loader: Any | None = None, checkpointer: Checkpointer | None = None,
                  hooks: Sequence[EpochHook] = (), **loop: Any) -> Trainer:
    """The Trainer for `opt` over `train_loader` (the only place one is built): loop settings
    from `cfg.train` / `cfg.run`, changed by `loop` keywords (epochs, log_every, max_steps,
    precision...). Training passes an assembled run's parts; lr-find its own schedule (and no
    checkpointer); the benchmarks a model, optimizer and loader of their own."""
    return Trainer(opt, LoopSettings.from_config(cfg, **loop), train_loader, val_loader, sinks,
                   checkpointer, hooks)


def load_for_eval(cfg: Config, ckpt: dict[str, Any], path: Path) -> tuple[DataBundle, Method]:
    """A saved run's data (normalized with its saved stats) and its method with the saved
    weights, for evaluation."""
    bundle, model = load_data_and_model(cfg, (ckpt["data"]["mean"], ckpt["data"]["std"]))
    method = build_method(cfg, model)  # first: a probe replaces the model's head
    bad = load_matching(method.model, ckpt["model"])
    if bad:
        raise ConfigError(f"Checkpoint {path} does not match its own config ({bad.describe()}).")
    load_method_state(method, ckpt, path)
    return bundle, method

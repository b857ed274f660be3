"""Shared pieces of the benchmarks: machine description, the bare step, trainlab's loop."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from trainlab.config.schema import Config, ModelConfig, OptimConfig, SchedConfig
from trainlab.data.augment import AugmentSpec
from trainlab.data.loader import DeviceLoader
from trainlab.engine.assemble import build_trainer
from trainlab.engine.evaluate import autocast
from trainlab.engine.sinks import Sinks
from trainlab.engine.trainer import Optimization, TrainState
from trainlab.methods.supervised import Supervised
from trainlab.models import ImageSpec, build_model
from trainlab.optim.factory import build_optimizer
from trainlab.optim.schedule import build_schedule


def machine() -> str:
    """CPU model, cores, torch version and threads, GPU name."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}; {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)}); {gpu}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fresh_model(cfg: ModelConfig, spec: ImageSpec, device: torch.device,
                channels_last: bool = False):
    """(model, AdamW optimizer) with a fixed seed."""
    torch.manual_seed(0)
    model = build_model(cfg, spec).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model, build_optimizer(OptimConfig(name="adamw", lr=1e-3), model)


def time_bare(model, opt, x_u8: torch.Tensor, y: torch.Tensor, batch: int, steps: int,
              precision: str = "fp32", channels_last: bool = False, step_fn=None,
              clock=time.perf_counter) -> float:
    """img/s of forward + cross-entropy + backward + AdamW on ready, normalized batches
    (`clock`: wall time, or time.process_time for CPU seconds)."""
    device = x_u8.device
    xs = [x_u8[i * batch:(i + 1) * batch].float().div(255).sub(0.5).div(0.25)
          for i in range(steps)]
    if channels_last:
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    ys = [y[i * batch:(i + 1) * batch] for i in range(steps)]
    fwd = step_fn if step_fn is not None else model

    def step(xb, yb):
        with autocast(device, precision):
            loss = F.cross_entropy(fwd(xb).float(), yb)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync(device)
    t = clock()
    for xb, yb in zip(xs, ys, strict=True):
        step(xb, yb)
    sync(device)
    return steps * batch / (clock() - t)


def time_trainer(model, opt, x_u8: torch.Tensor, y: torch.Tensor, batch: int, steps: int,
                 aug: AugmentSpec | None, tmp: Path, precision: str = "fp32",
                 channels_last: bool = False, train_module=None, clock=time.perf_counter) -> float:
    """img/s of one Trainer.fit epoch of `steps` batches (DeviceLoader, metrics, no files)."""
    n = steps * batch
    loader = DeviceLoader(x_u8[:n], y[:n], batch, [0.5] * x_u8.shape[1], [0.25] * x_u8.shape[1],
                          shuffle=True, augment=aug)
    sched = build_schedule(SchedConfig(warmup_epochs=0), 1e-3, len(loader), 1)
    method = Supervised(model)
    wrapped = train_module(method) if train_module else None
    tr = build_trainer(Config(), Optimization(method, opt, sched, train_module=wrapped), loader,
                       Sinks.quiet(tmp), epochs=1, accum_steps=1, grad_clip=0.0, log_every=50,
                       precision=precision, channels_last=channels_last)
    sync(x_u8.device)
    t = clock()
    tr.fit(TrainState())
    sync(x_u8.device)
    return n / (clock() - t)

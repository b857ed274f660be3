"""Assemble a run from a config: data, model, method, optimizer, schedule, sinks, trainer."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainlab.config.load import config_from_dict, dump_yaml, to_dict
from trainlab.config.schema import Config
from trainlab.config.validate import validate
from trainlab.data.augment import resolve_augment
from trainlab.data.loader import DeviceLoader
from trainlab.data.sources import DataSplits, load_data
from trainlab.data.stats import channel_stats
from trainlab.engine.checkpoint import (
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    resolve_resume,
    set_rng_state,
)
from trainlab.engine.sinks import Console, MetricsFile, TensorBoard
from trainlab.engine.trainer import Trainer, TrainState
from trainlab.errors import ConfigError
from trainlab.methods import build_method
from trainlab.models import ImageSpec, build_model, count_params
from trainlab.optim.factory import build_optimizer
from trainlab.optim.schedule import build_schedule


def resolve_device(name: str) -> torch.device:
    """`run.device`: auto picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
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
    return dev


def _same_run(saved: dict[str, Any], cfg: Config) -> bool:
    """Would `cfg` continue the run whose config is `saved` (ignoring run.dir / run.resume)?"""
    a, b = dict(saved), to_dict(cfg)
    for d in (a, b):
        d["run"] = {k: v for k, v in d["run"].items() if k not in ("dir", "resume")}
    return a == b


def resolve_run_dir(cfg: Config, recipe_name: str) -> Path:
    """run.dir, or runs/<recipe>-<timestamp>; with run.resume=auto and no run.dir, the newest
    unfinished run of the same recipe and config (so rerunning the same command continues it)."""
    if cfg.run.dir:
        return Path(cfg.run.dir)
    if cfg.run.resume == "auto":
        import yaml

        for d in sorted(Path("runs").glob(f"{recipe_name}-*"), reverse=True):
            if (d / "checkpoints" / "last.pt").is_file() and not (d / "summary.json").exists():
                try:
                    saved = yaml.safe_load((d / "config.yaml").read_text())
                except (OSError, yaml.YAMLError):
                    continue
                if _same_run(saved, cfg):
                    return d
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, i = Path("runs") / f"{recipe_name}-{stamp}", 1
    while path.exists():  # two runs started in the same second
        path, i = Path("runs") / f"{recipe_name}-{stamp}-{i}", i + 1
    return path


@dataclass
class Parts:
    """Everything built from a config that both `train` and `eval` need."""

    data: DataSplits
    spec: ImageSpec
    mean: list[float]
    std: list[float]
    model: torch.nn.Module
    device: torch.device

    def loader(self, split: str, batch_size: int, **kw: Any) -> DeviceLoader:
        x, y = getattr(self.data, f"x_{split}"), getattr(self.data, f"y_{split}")
        return DeviceLoader(x.to(self.device), y.to(self.device), batch_size, self.mean,
                            self.std, shuffle=kw.pop("shuffle", False), **kw)

    def data_info(self) -> dict[str, Any]:
        s = self.spec
        return {"name": self.data.name, "mean": self.mean, "std": self.std,
                "class_names": self.data.class_names, "channels": s.channels,
                "height": s.height, "width": s.width, "num_classes": s.num_classes}


def build_parts(cfg: Config, stats: tuple[list[float], list[float]] | None = None) -> Parts:
    """Load data, compute (or reuse) normalization stats, build the model on the device."""
    device = resolve_device(cfg.run.device)
    data = load_data(cfg.data)
    mean, std = stats if stats is not None else channel_stats(data.x_train)
    spec = ImageSpec(channels=data.channels, height=data.height, width=data.width,
                     num_classes=data.num_classes)
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model, spec).to(device)
    return Parts(data, spec, list(mean), list(std), model, device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: Config, recipe_name: str = "default") -> dict[str, Any]:
    """Run training end to end; returns the summary written to summary.json."""
    validate(cfg)
    run_dir = resolve_run_dir(cfg, recipe_name)
    ckpt_path = resolve_resume(cfg.run.resume, run_dir)
    ckpt = load_checkpoint(ckpt_path) if ckpt_path else None
    seed_everything(cfg.run.seed)
    stats = (ckpt["data"]["mean"], ckpt["data"]["std"]) if ckpt else None
    parts = build_parts(cfg, stats)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dir=str(run_dir)))
    method = build_method(cfg, parts.model)
    optimizer = build_optimizer(cfg.optim, parts.model)
    t = cfg.train
    train_loader = parts.loader("train", t.batch_size, shuffle=True,
                                augment=resolve_augment(cfg.data), seed=cfg.run.seed)
    val_loader = parts.loader("val", t.eval_batch_size)
    steps_per_epoch = -(-len(train_loader) // t.accum_steps)
    schedule = build_schedule(cfg.sched, cfg.optim.lr, steps_per_epoch, t.epochs)
    state = TrainState()
    if ckpt is not None:
        _restore(ckpt, parts.model, optimizer, ckpt_path)
        state = TrainState(**ckpt["state"])
    is_main = True
    console = Console(is_main, cfg.run.progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    atomic_write_json(run_dir / "data.json", parts.data_info())
    metrics = MetricsFile(run_dir, is_main, resume_step=state.step if ckpt else None)
    tb = TensorBoard(run_dir, is_main, cfg.run.tensorboard)
    params = count_params(parts.model)
    _print_header(console, cfg, parts, params, len(train_loader), steps_per_epoch, schedule,
                  run_dir, ckpt_path, state)
    extra = lambda: {"config": to_dict(cfg), "data": parts.data_info()}  # noqa: E731
    trainer = Trainer(method, optimizer, schedule, train_loader, val_loader, epochs=t.epochs,
                      accum_steps=t.accum_steps, grad_clip=t.grad_clip,
                      log_every=cfg.run.log_every, run_dir=run_dir, is_main=is_main,
                      console=console, metrics=metrics, tb=tb, checkpoint_extra=extra)
    try:
        if ckpt is not None:
            set_rng_state(ckpt["rng"])
        state = trainer.fit(state)
        t0 = time.perf_counter()
        final_val = trainer.evaluate(val_loader) if len(val_loader.y) else {}
        test = trainer.evaluate(parts.loader("test", t.eval_batch_size))
        eval_s = time.perf_counter() - t0
    finally:
        tb.close()
    summary = {
        "best_val_acc": state.best_val_acc,
        "best_epoch": state.best_epoch,
        "final_val_acc": final_val.get("acc"),
        "test_acc": test["acc"],
        "test_top5": test.get("top5"),
        "test_loss": test["loss"],
        "epochs": state.epoch,
        "steps": state.step,
        "wall_s": round(state.wall_s, 3),
        "eval_s": round(eval_s, 3),
        "params": params,
        "model": cfg.model.name,
        "data": cfg.data.name,
        "method": cfg.method.name,
        "device": str(parts.device),
        "run_dir": str(run_dir),
    }
    rec = {"kind": "test", "step": state.step, **{f"test_{k}": v for k, v in test.items()}}
    metrics.log(rec)
    atomic_write_json(run_dir / "summary.json", summary)
    top5 = f"  top-5 {test['top5']:.4f}" if "top5" in test else ""
    console.print(f"test accuracy {test['acc']:.4f}{top5}  (loss {test['loss']:.4f}); training "
                  f"wall time {state.wall_s:.1f}s; results in {run_dir}")
    return summary


def _restore(ckpt: dict[str, Any], model: torch.nn.Module, optimizer: Any, path: Path) -> None:
    missing, unexpected = _load_state(model, ckpt["model"])
    if missing or unexpected:
        raise ConfigError(
            f"Checkpoint {path} does not fit model.name={ckpt['config']['model']['name']!r} as "
            f"configured now (missing keys: {missing[:5]}, unexpected keys: {unexpected[:5]}). "
            f"Resume with the same model settings as the saved run (see its config.yaml)."
        )
    optimizer.load_state_dict(ckpt["optimizer"])


def _load_state(model: torch.nn.Module, sd: dict[str, Any]) -> tuple[list[str], list[str]]:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if missing or unexpected or bad_shape:
        return missing + bad_shape, unexpected
    model.load_state_dict(sd)
    return [], []


def _print_header(console: Console, cfg: Config, parts: Parts, params: int, batches: int,
                  steps_per_epoch: int, schedule: Any, run_dir: Path, ckpt: Path | None,
                  state: TrainState) -> None:
    d, t = parts.data, cfg.train
    console.print(
        f"trainlab: {cfg.method.name} {cfg.model.name} ({params / 1e6:.2f}M params) on "
        f"{d.name} {d.channels}x{d.height}x{d.width}, {d.num_classes} classes; "
        f"train/val/test {len(d.y_train)}/{len(d.y_val)}/{len(d.y_test)}; device {parts.device}")
    console.print(
        f"derived: effective batch {t.batch_size * t.accum_steps} ({t.batch_size} x "
        f"{t.accum_steps} accum), {batches} batches = {steps_per_epoch} optimizer steps/epoch, "
        f"{schedule.total_steps} steps total, warmup {schedule.warmup_steps} steps, "
        f"{cfg.optim.name} peak lr {cfg.optim.lr:g}, {cfg.sched.name} schedule")
    if ckpt is not None:
        console.print(f"resumed from {ckpt} at epoch {state.epoch + 1}, batch {state.batch}, "
                      f"step {state.step}")
    console.print(f"run dir {run_dir}")


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


def evaluate_run(path: str | Path, split: str = "test", which: str = "last",
                 overrides: list[str] | tuple = ()) -> dict[str, Any]:
    """Evaluate a saved run on a split with the normalization stats saved in its checkpoint."""
    from trainlab.config.load import merge, parse_override
    from trainlab.engine.trainer import evaluate

    cfg, ckpt, p = load_run(path, which)
    if overrides:
        cfg = merge(cfg, [("the command line", dict(parse_override(o) for o in overrides))])
    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split must be train, val or test (got {split!r}).")
    parts = build_parts(cfg, (ckpt["data"]["mean"], ckpt["data"]["std"]))
    missing, unexpected = _load_state(parts.model, ckpt["model"])
    if missing or unexpected:
        raise ConfigError(f"Checkpoint {p} does not match its own config (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}).")
    method = build_method(cfg, parts.model)
    loader = parts.loader(split, cfg.train.eval_batch_size)
    if len(loader.y) == 0:
        raise ConfigError(f"The {split} split of this run is empty (data.val_fraction=0?).")
    res = evaluate(method, loader)
    return {"checkpoint": str(p), "split": split, "n": len(loader.y), **res}

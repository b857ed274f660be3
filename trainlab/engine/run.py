"""Assemble a run from a config: data, model, method, optimizer, schedule, sinks, trainer."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from trainlab.config.load import dump_yaml, to_dict
from trainlab.config.schema import Config
from trainlab.config.validate import validate
from trainlab.data.keys import rank_seed
from trainlab.dist.env import DistEnv, detect
from trainlab.dist.setup import (
    HEARTBEAT_S,
    all_gather_objects,
    init_distributed,
    report_failure,
    teardown,
    wait_for_peer_failure,
)
from trainlab.engine.checkpoint import (
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    resolve_resume,
    set_rng_state,
)
from trainlab.engine.ema import EMA
from trainlab.engine.parts import (
    Parts,
    build_parts,
    load_run,
    load_state,
    resolve_device,
    seed_everything,
    train_loader_for,
)
from trainlab.engine.pretrained import (
    load_encoder,
    load_method_state,
    load_pretrained,
    method_state,
)
from trainlab.engine.sinks import Console, MetricsFile, TensorBoard
from trainlab.engine.trainer import Interrupted, Trainer, TrainState
from trainlab.errors import ConfigError, TrainlabError
from trainlab.methods import build_method
from trainlab.models import count_params
from trainlab.optim.factory import build_optimizer
from trainlab.optim.schedule import build_schedule

__all__ = ["train", "evaluate_run", "load_run", "build_parts", "resolve_run_dir"]


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


def train(cfg: Config, recipe_name: str = "default") -> dict[str, Any]:
    """Run training end to end (as one rank of a distributed job when launched by torchrun or
    srun); returns the summary written to summary.json."""
    validate(cfg)
    env = detect()
    if cfg.train.batch_size % env.world_size:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is the global batch and must divide by "
            f"the {env.world_size} processes of this job; use a multiple of {env.world_size}.")
    device = resolve_device(cfg.run.device, env)
    init_distributed(env, device, cfg.run.dist_timeout_s)
    clean = False
    usr1 = _ignore_usr1()  # Slurm's time-limit warning only means something during training
    try:
        summary = _train(cfg, recipe_name, env, device)
        clean = True
        return summary
    except Interrupted as e:  # checkpoint saved; inside a Slurm job: requeue it
        from trainlab.launch.requeue import requeue_after_interrupt

        requeue_after_interrupt(e, env.is_main, cfg.run.max_requeues)
        raise
    except BaseException as e:
        if env.distributed and not isinstance(e, (Interrupted, KeyboardInterrupt)):
            report_failure(f"{type(e).__name__}: {e}")
            if not isinstance(e, TrainlabError):  # a collective failed: a peer may be gone
                wait_for_peer_failure(cfg.run.dist_timeout_s + 3 * HEARTBEAT_S)
        raise
    finally:
        teardown(clean)
        if usr1 is not None:
            signal.signal(signal.SIGUSR1, usr1)


def _ignore_usr1() -> Any:
    """Ignore SIGUSR1 outside the training loop (whose StopFlag catches it), so a time-limit
    warning during setup or the final evaluation does not kill the process; returns the old
    handler (None when not settable: not the main thread, or no SIGUSR1 on this platform)."""
    if not hasattr(signal, "SIGUSR1") or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGUSR1, signal.SIG_IGN)


@dataclass
class Assembly:
    """What a run trains: data and model (`parts`), method, optimizer, train loader."""

    parts: Parts
    init: Any  # the pretrained encoder loaded from model.init, or None
    method: Any
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    train_loader: Any
    steps_per_epoch: int  # optimizer steps per epoch (micro-batches / accum_steps, rounded up)


def assemble(cfg: Config, env: DistEnv, device: torch.device,
             ckpt: dict[str, Any] | None = None) -> Assembly:
    """Build a run's parts in a fixed order (so seeded weights repeat): data (with the
    checkpoint's or the pretrained run's normalization), model + pretrained encoder (not when
    resuming: the checkpoint has every weight), SyncBN/channels_last, method, optimizer,
    GradScaler, train loader. Shared by training and `lr-find`."""
    init = load_pretrained(cfg.model.init) if cfg.model.init and ckpt is None else None
    seed_everything(cfg.run.seed)
    stats = (ckpt["data"]["mean"], ckpt["data"]["std"]) if ckpt else None
    parts = build_parts(cfg, stats or (init.stats_for(cfg) if init else None), env, device)
    if init is not None:
        load_encoder(parts.model, init, cfg.model.name)
    t = cfg.train
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = t.tf32
        torch.backends.cudnn.allow_tf32 = t.tf32
    if t.sync_bn and env.distributed:
        parts.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(parts.model)
    if t.channels_last:
        parts.model.to(memory_format=torch.channels_last)
    method = build_method(cfg, parts.model)
    optimizer = build_optimizer(cfg.optim, method)  # the model and the method's own heads
    scaler = torch.amp.GradScaler(device.type) if t.precision == "fp16" else None
    train_loader = train_loader_for(cfg, parts)
    # The weights above are built from run.seed on every rank; from here each rank's global
    # generator (dropout, drop-path) gets its own seed, so ranks drop different units. Each
    # rank's state is checkpointed, so a resume is exact; a 1-rank run repeats under its seed.
    # Dropout masks are per rank, not per sample: runs at different world sizes differ.
    torch.manual_seed(rank_seed(cfg.run.seed, env.rank))
    return Assembly(parts, init, method, optimizer, scaler, train_loader,
                    -(-len(train_loader) // t.accum_steps))


def _train(cfg: Config, recipe_name: str, env: DistEnv, device: torch.device) -> dict[str, Any]:
    run_dir = Path(all_gather_objects(str(resolve_run_dir(cfg, recipe_name)))[0])
    ckpt_path = resolve_resume(cfg.run.resume, run_dir)
    ckpt = load_checkpoint(ckpt_path) if ckpt_path else None
    a = assemble(cfg, env, device, ckpt)
    parts, init, method, optimizer, scaler = a.parts, a.init, a.method, a.optimizer, a.scaler
    train_loader, steps_per_epoch, model = a.train_loader, a.steps_per_epoch, a.parts.model
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dir=str(run_dir)))
    t = cfg.train
    ema = EMA(model, t.ema_decay) if t.ema_decay > 0 else None
    val_loader = parts.loader("val", t.eval_batch_size)
    schedule = build_schedule(cfg.sched, cfg.optim.lr, steps_per_epoch, t.epochs)
    state = TrainState()
    if ckpt is not None:
        _restore(ckpt, model, optimizer, ckpt_path, ema, scaler)
        load_method_state(method, ckpt, ckpt_path)
        state = TrainState(**ckpt["state"])
    train_module: torch.nn.Module = method
    if env.distributed:
        ids = [device.index] if device.type == "cuda" else None
        train_module = DDP(method, device_ids=ids)
    if t.compile:
        train_module = torch.compile(train_module)
    is_main = env.is_main
    console = Console(is_main, cfg.run.progress)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
        atomic_write_json(run_dir / "data.json", parts.data_info())
    metrics = MetricsFile(run_dir, is_main, resume_step=state.step if ckpt else None)
    tb = TensorBoard(run_dir, is_main, cfg.run.tensorboard)
    params = count_params(model)
    _print_header(console, cfg, parts, params, len(train_loader), steps_per_epoch, schedule,
                  run_dir, ckpt_path, state)
    if init is not None:
        console.print(f"encoder weights from {init.path} ({init.describe()})")
    extra = lambda: {"config": to_dict(cfg), "data": parts.data_info(),  # noqa: E731
                     **method_state(method)}
    ema_method = build_method(cfg, ema.module) if ema is not None else None
    trainer = Trainer(method, optimizer, schedule, train_loader, val_loader, epochs=t.epochs,
                      accum_steps=t.accum_steps, grad_clip=t.grad_clip,
                      log_every=cfg.run.log_every, run_dir=run_dir, is_main=is_main,
                      console=console, metrics=metrics, tb=tb, checkpoint_extra=extra,
                      train_module=train_module, precision=t.precision, scaler=scaler,
                      ema=ema, ema_method=ema_method, channels_last=t.channels_last,
                      epoch_hooks=_epoch_hooks(cfg, parts, method, run_dir, is_main))
    try:
        if ckpt is not None:
            set_rng_state(ckpt["rng"], env.rank)
        state = trainer.fit(state)
        t0 = time.perf_counter()
        final_val = trainer.evaluate(val_loader) if len(val_loader.y) else {}
        test_loader = parts.loader("test", t.eval_batch_size)
        test = trainer.evaluate(test_loader)
        test_ema = trainer.evaluate(test_loader, ema=True) if ema is not None else {}
        eval_s = time.perf_counter() - t0
    finally:
        tb.close()
    summary = {
        "best_val_acc": state.best_val_acc,
        "best_epoch": state.best_epoch,
        "final_val_acc": final_val.get("acc"),
        "test_acc": test.get("acc"),  # None for pretraining methods (mae, simclr)
        "test_top5": test.get("top5"),
        "test_loss": test["loss"],
        **({"test_ema_acc": test_ema["acc"]} if test_ema else {}),
        "epochs": state.epoch,
        "steps": state.step,
        "wall_s": round(state.wall_s, 3),
        "eval_s": round(eval_s, 3),
        "params": params,
        "model": cfg.model.name,
        "data": cfg.data.name,
        "method": cfg.method.name,
        "device": str(parts.device),
        "world_size": env.world_size,
        "run_dir": str(run_dir),
    }
    rec = {"kind": "test", "step": state.step, **{f"test_{k}": v for k, v in test.items()}}
    metrics.log(rec)
    if is_main:
        atomic_write_json(run_dir / "summary.json", summary)
    top5 = f"  top-5 {test['top5']:.4f}" if "top5" in test else ""
    ema_txt = f"  EMA {test_ema['acc']:.4f}" if test_ema else ""
    res = (f"test accuracy {test['acc']:.4f}{top5}{ema_txt}  (loss {test['loss']:.4f})"
           if "acc" in test else f"test loss {test['loss']:.4f}")  # pretraining: no accuracy
    console.print(f"{res}; training wall time {state.wall_s:.1f}s; results in {run_dir}")
    return summary


def _epoch_hooks(cfg: Config, parts: Parts, method: Any, run_dir: Path,
                 is_main: bool) -> list[Any]:
    """Called after each epoch's validation: MAE pictures (rank 0), the online kNN monitor."""
    from trainlab.knn import KnnMonitor
    from trainlab.report.mae_viz import MaeVisuals

    hooks: list[Any] = []
    if cfg.method.name == "mae":
        hooks.append(MaeVisuals(method, parts, run_dir, is_main))
    if cfg.method.knn_every > 0:
        hooks.append(KnnMonitor(cfg, parts, method.model))
    return hooks


def _restore(ckpt: dict[str, Any], model: torch.nn.Module, optimizer: Any, path: Path,
             ema: EMA | None, scaler: Any) -> None:
    missing, unexpected = load_state(model, ckpt["model"])
    if missing or unexpected:
        raise ConfigError(
            f"Checkpoint {path} does not fit model.name={ckpt['config']['model']['name']!r} as "
            f"configured now (missing keys: {missing[:5]}, unexpected keys: {unexpected[:5]}). "
            f"Resume with the same model settings as the saved run (see its config.yaml)."
        )
    optimizer.load_state_dict(ckpt["optimizer"])
    if ema is not None:
        ema.load_state_dict(ckpt["ema"] if "ema" in ckpt else ckpt["model"])
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])


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
    method = build_method(cfg, parts.model)  # first: a probe replaces the model's head
    missing, unexpected = load_state(method.model, ckpt["model"])
    if missing or unexpected:
        raise ConfigError(f"Checkpoint {p} does not match its own config (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}).")
    load_method_state(method, ckpt, p)
    loader = parts.loader(split, cfg.train.eval_batch_size)
    if len(loader.y) == 0:
        raise ConfigError(f"The {split} split of this run is empty (data.val_fraction=0?).")
    res = evaluate(method, loader)
    return {"checkpoint": str(p), "split": split, "n": len(loader.y), **res}

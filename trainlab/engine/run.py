"""Run training end to end from a validated config, and evaluate saved runs.

`train` is what `trainlab train` (and every Slurm job, sweep point and torchrun rank) runs:
resolve the run folder, load the checkpoint to resume from, assemble, train, evaluate on the
test split, write summary.json. Callers above (launch/) add epoch hooks (pictures) and handle
preemption (requeue); this module knows nothing about Slurm or plots.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from trainlab.config import method_defaults
from trainlab.config.load import dump_yaml, merge_overrides, to_dict
from trainlab.config.schema import Config
from trainlab.dist.env import DistEnv, detect
from trainlab.dist.setup import (
    HEARTBEAT_S,
    all_gather_objects,
    init_distributed,
    report_failure,
    resolve_device,
    teardown,
    wait_for_peer_failure,
)
from trainlab.dist.threads import CpuShare, usable_cpus
from trainlab.engine.assemble import Assembly, assemble, build_trainer, load_for_eval
from trainlab.engine.checkpoint import (
    Checkpointer,
    check_resume,
    check_same_data,
    config_differences,
    load_checkpoint,
    load_run,
    resolve_resume,
    set_rng_state,
)
from trainlab.engine.checks import check_config, check_measure_overrides, check_same_splits
from trainlab.engine.evaluate import evaluate
from trainlab.engine.knn import KnnMonitor
from trainlab.engine.pretrained import method_state
from trainlab.engine.runstate import mark_state
from trainlab.engine.sinks import Console, Sinks
from trainlab.engine.threads import ThreadControl
from trainlab.engine.trainer import EpochHook, StopFlag, TrainState
from trainlab.errors import ConfigError, Interrupted, TrainlabError
from trainlab.files import atomic_write_json, atomic_write_text, timestamped_dir
from trainlab.models import count_params

# Builds an extra epoch hook for an assembled run (e.g. MAE pictures): (run, run_dir, is_main)
HookFactory = Callable[[Assembly, Path, bool], EpochHook | None]

RUN_FILES = ("checkpoints", "summary.json", "metrics.jsonl", "metrics.csv", "tb")
OWN_FILES = (*RUN_FILES, "config.yaml", "data.json", "mae", "state.json", "report.html",
             "plots")  # deleted by run.overwrite=true


def check_writable(run_dir: Path) -> None:
    """ConfigError unless `run_dir` is, or can be created as, a folder we may write in."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run.dir={run_dir} is a file, not a folder; choose another run.dir.")
    parent = run_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"run.dir={run_dir} cannot be created: {parent} is a file. Choose a "
                          f"run.dir under a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"run.dir={run_dir} cannot be written: no write permission in "
                          f"{parent}. Choose a run.dir where you may write (e.g. under your "
                          f"home or scratch folder).")


def claim_run_dir(run_dir: Path, cfg: Config, ckpt_path: Path | None, is_main: bool) -> None:
    """Refuse to start a new run over files of an earlier run in `run_dir` (nothing is lost
    silently): continuing it needs run.resume=auto, replacing it run.overwrite=true. A folder
    whose run never wrote a checkpoint or summary is taken over by run.resume=auto."""
    check_writable(run_dir)
    held = [f for f in RUN_FILES if (run_dir / f).exists()]
    if not held or (ckpt_path is not None and run_dir.resolve() in ckpt_path.resolve().parents):
        return
    resumable = (run_dir / "summary.json").exists() or any((run_dir / "checkpoints").glob("*.pt"))
    if not cfg.run.overwrite and (resumable or cfg.run.resume != "auto"):
        raise ConfigError(
            f"run.dir={run_dir} already holds a run ({', '.join(held)}); nothing was changed. "
            f"To continue it, add run.resume=auto. To start over in the same folder, add "
            f"run.overwrite=true (deletes its checkpoints, metrics and TensorBoard events). Or "
            f"choose another run.dir.")
    if is_main:
        for name in OWN_FILES:
            p = run_dir / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def _same_run(saved: dict[str, Any], cfg: Config) -> bool:
    """Would `cfg` continue the run whose config is `saved` (the resume rules)?"""
    return not config_differences(saved, cfg)


def resolve_run_dir(cfg: Config, recipe_name: str) -> Path:
    """run.dir, or runs/<recipe>-<timestamp>; with run.resume=auto and no run.dir, the newest
    unfinished run of the same recipe and config (so rerunning the same command continues it)."""
    if cfg.run.dir:
        return Path(cfg.run.dir)
    if cfg.run.resume == "auto":
        for d in sorted(Path("runs").glob(f"{recipe_name}-*"), reverse=True):
            if (d / "checkpoints" / "last.pt").is_file() and not (d / "summary.json").exists():
                try:
                    saved = yaml.safe_load((d / "config.yaml").read_text())
                except (OSError, yaml.YAMLError):
                    continue
                if _same_run(saved, cfg):
                    return d
    return timestamped_dir("runs", recipe_name)


def train(cfg: Config, recipe_name: str = "default",
          hooks: Sequence[HookFactory] = ()) -> dict[str, Any]:
    """Run training end to end (as one rank of a distributed job when launched by torchrun or
    srun); returns the summary written to summary.json. Raises `Interrupted` (checkpoint
    saved) on SIGINT/SIGTERM/SIGUSR1; `hooks` add epoch hooks to the assembled run."""
    check_config(cfg)
    env = detect()
    if cfg.train.batch_size % env.world_size:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is the global batch and must divide by "
            f"the {env.world_size} processes of this job; use a multiple of {env.world_size}.")
    device = resolve_device(cfg.run.device, env)
    # Slurm's time-limit warning (USR1) during setup is kept for the training loop, which
    # then checkpoints after its first step (and the job is requeued) instead of dying now.
    stop = StopFlag()
    usr1 = _catch_usr1(stop)
    share = CpuShare(usable_cpus()).__enter__()  # counted by runs sharing these CPUs
    clean = False
    seen: dict[str, Path] = {}  # the run folder, once known
    try:
        init_distributed(env, device, cfg.run.dist_timeout_s)
        summary = _train(cfg, recipe_name, env, device, hooks, share, seen, stop)
        clean = True
        return summary
    except BaseException as e:
        if env.is_main and "run_dir" in seen:
            stopped = isinstance(e, (Interrupted, KeyboardInterrupt))
            mark_state(seen["run_dir"], "interrupted" if stopped else "failed",
                       **({} if stopped else {"error": f"{type(e).__name__}: {e}"[:500]}))
        if env.distributed and not isinstance(e, (Interrupted, KeyboardInterrupt)):
            report_failure(f"{type(e).__name__}: {e}")
            if not isinstance(e, TrainlabError):  # a collective failed: a peer may be gone
                wait_for_peer_failure(cfg.run.dist_timeout_s + 3 * HEARTBEAT_S)
        raise
    finally:
        teardown(clean)
        share.__exit__()
        if usr1 is not None:
            signal.signal(signal.SIGUSR1, usr1)


def _catch_usr1(stop: StopFlag) -> Any:
    """Record SIGUSR1 in `stop` outside the training loop (whose StopFlag is `stop`), so a
    time-limit warning during setup still stops the loop after its first step (checkpoint,
    requeue) and one during the final evaluation does not kill the process; returns the old
    handler (None when not settable: not the main thread, or no SIGUSR1 on this platform)."""
    if not hasattr(signal, "SIGUSR1") or threading.current_thread() is not threading.main_thread():
        return None

    def record(signum: int, frame: Any) -> None:
        if stop.signum is None:
            stop.signum = signum

    return signal.signal(signal.SIGUSR1, record)


def _train(cfg: Config, recipe_name: str, env: DistEnv, device: torch.device,
           hooks: Sequence[HookFactory], share: CpuShare, seen: dict[str, Path],
           stop: StopFlag) -> dict[str, Any]:
    run_dir = Path(all_gather_objects(str(resolve_run_dir(cfg, recipe_name)))[0])
    ckpt_path = resolve_resume(cfg.run.resume, run_dir)
    claim_run_dir(run_dir, cfg, ckpt_path, env.is_main)
    ckpt = load_checkpoint(ckpt_path) if ckpt_path else None
    if ckpt is not None:
        check_resume(ckpt, cfg, ckpt_path)
    a = assemble(cfg, env, device, ckpt, ckpt_path)
    if ckpt is not None:
        check_same_data(ckpt["data"], a.data.info(), ckpt_path)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dir=str(run_dir)))
    t, is_main = cfg.train, env.is_main
    state = TrainState(**ckpt["state"]) if ckpt is not None else TrainState()
    val_loader = a.data.loader("val", t.eval_batch_size)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
        atomic_write_json(run_dir / "data.json", a.data.info())
        mark_state(run_dir, "running")
        seen["run_dir"] = run_dir
    sinks = Sinks.for_run(run_dir, is_main, cfg.run.progress, cfg.run.tensorboard,
                          resume_step=state.step if ckpt else None)
    params = count_params(a.model)
    threads = ThreadControl(share, cfg.run.threads)
    _print_header(sinks.console, cfg, a, params, run_dir, ckpt_path, state, threads)
    if a.init is not None:
        sinks.console.print(f"encoder weights from {a.init.path} ({a.init.describe()})")
    checkpointer = Checkpointer(run_dir, is_main, lambda: {
        "config": to_dict(cfg), "data": a.data.info(), **method_state(a.method)})
    epoch_hooks = [h for h in (make(a, run_dir, is_main) for make in hooks) if h is not None]
    if cfg.method.knn_every > 0:
        epoch_hooks.append(KnnMonitor(cfg, a.data, a.model))
    if device.type == "cpu":
        epoch_hooks.append(threads)  # re-plan the threads after every epoch
    trainer = build_trainer(cfg, a.opt, a.train_loader, sinks, val_loader=val_loader,
                            checkpointer=checkpointer, hooks=epoch_hooks)
    trainer.stop = stop  # holds a USR1 that arrived during setup
    nodes = [str(n) for n in all_gather_objects(env.node)]
    try:
        if ckpt is not None:
            set_rng_state(ckpt["rng"], env.rank)
        state = trainer.fit(state)
        t0 = time.perf_counter()
        final_val = trainer.evaluate(val_loader) if len(val_loader.y) else {}
        test_loader = a.data.loader("test", t.eval_batch_size)
        test = trainer.evaluate(test_loader)
        test_ema = trainer.evaluate(test_loader, ema=True) if a.opt.ema is not None else {}
        eval_s = time.perf_counter() - t0
    finally:
        sinks.tb.close()
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
        "device": str(a.device),
        "world_size": env.world_size,
        "nodes": sorted(set(nodes)),  # where the ranks ran (SLURMD_NODENAME or host name)
        "run_dir": str(run_dir),
    }
    rec = {"kind": "test", "step": state.step, **{f"test_{k}": v for k, v in test.items()}}
    sinks.metrics.log(rec)
    if is_main:
        atomic_write_json(run_dir / "summary.json", summary)
        mark_state(run_dir, "finished")
    top5 = f"  top-5 {test['top5']:.4f}" if "top5" in test else ""
    ema_txt = f"  EMA {test_ema['acc']:.4f}" if test_ema else ""
    res = (f"test accuracy {test['acc']:.4f}{top5}{ema_txt}  (loss {test['loss']:.4f})"
           if "acc" in test else f"test loss {test['loss']:.4f}")  # pretraining: no accuracy
    sinks.console.print(f"{res}; training wall time {state.wall_s:.1f}s; results in {run_dir}")
    return summary


def _print_header(console: Console, cfg: Config, a: Assembly, params: int, run_dir: Path,
                  ckpt: Path | None, state: TrainState, threads: ThreadControl) -> None:
    d, t, schedule = a.data, cfg.train, a.opt.schedule
    console.print(
        f"trainlab: {cfg.method.name} {cfg.model.name} ({params / 1e6:.2f}M params) on "
        f"{d.data.name} {d.channels}x{d.height}x{d.width}, {d.num_classes} classes; "
        f"train/val/test {len(d.data.y_train)}/{len(d.data.y_val)}/{len(d.data.y_test)}; "
        f"device {d.device}, {threads.describe()}")
    console.print(
        f"derived: effective batch {t.batch_size * t.accum_steps} ({t.batch_size} x "
        f"{t.accum_steps} accum), {len(a.train_loader)} batches = {a.steps_per_epoch} optimizer "
        f"steps/epoch, {schedule.total_steps} steps total, warmup {schedule.warmup_steps} steps, "
        f"{cfg.optim.name} peak lr {cfg.optim.lr:g}, {cfg.sched.name} schedule")
    if cfg.method_defaults:
        console.print(f"derived: method defaults ({cfg.method.name}) for keys left unset: "
                      f"{method_defaults.describe(cfg.method_defaults)}")
    if cfg.method_defaults_skipped:
        console.print(f"method defaults ({cfg.method.name}) not applied: "
                      f"{method_defaults.describe_skipped(cfg.method_defaults_skipped)}")
    if ckpt is not None:
        console.print(f"resumed from {ckpt} at epoch {state.epoch + 1}, batch {state.batch}, "
                      f"step {state.step}")
    console.print(f"run dir {run_dir}")


def evaluate_run(path: str | Path, split: str = "test", which: str = "last",
                 overrides: list[str] | tuple = ()) -> dict[str, Any]:
    """Evaluate a saved run on a split with the normalization stats saved in its checkpoint."""
    check_measure_overrides(overrides, "eval")
    run_cfg, ckpt, p = load_run(path, which)
    cfg = merge_overrides(run_cfg, overrides)
    check_config(cfg)
    check_same_splits(run_cfg, cfg, "eval", split)
    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split must be train, val or test (got {split!r}).")
    data, method = load_for_eval(cfg, ckpt, p)
    loader = data.loader(split, cfg.train.eval_batch_size)
    if len(loader.y) == 0:
        raise ConfigError(f"The {split} split of this run is empty (data.val_fraction=0?).")
    res = evaluate(method, loader)
    return {"checkpoint": str(p), "split": split, "n": len(loader.y), **res}

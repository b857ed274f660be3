"""`trainlab lr-find RECIPE`: the learning-rate range test (L. Smith 2015; fastai's lr_find).

The lr grows exponentially from --start to --end, one value per optimizer step, while the
ordinary `Trainer` (the one training loop) trains the configured model, method and optimizer
and logs the training loss of every step to metrics.jsonl. The loss is smoothed (exponential
moving average, bias corrected) and cut where it exceeds 4x its minimum or stops being finite;
the suggestion is the lr where the smoothed loss falls fastest (per decade of lr), taken below
the lr of the minimum loss.

Pairing (the off-by-one): the Trainer's train record `step=s` is written after update s
(1-based) with that update's lr, schedule(s - 1), and the loss of the batch the update was
computed from, i.e. measured *before* the update. Row k of lr_find.csv (update k, 0-based)
pairs schedule(k) (record k + 1) with the loss of the next batch (record k + 2): the first loss
that the update at that lr changed. Hence the Trainer runs max_steps = steps + 1.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from trainlab.errors import TrainlabError

BETA = 0.98  # smoothing of the loss: weight of the past
DIVERGE_FACTOR = 4.0  # stop when the smoothed loss exceeds this many times its minimum
GRID_FACTOR = 3.0  # the suggested sweep: suggestion / 3, suggestion, suggestion * 3


@dataclass(frozen=True)
class ExpSchedule:
    """lr(step) = start * (end / start) ** (step / (steps - 1)): `start` at optimizer step 0,
    `end` at step steps - 1 (and after). Same interface as `optim.schedule.Schedule`."""

    start: float
    end: float
    steps: int

    @property
    def total_steps(self) -> int:
        return self.steps

    warmup_steps = 0

    def __call__(self, step: int) -> float:
        t = min(step, self.steps - 1) / max(1, self.steps - 1)
        return self.start * (self.end / self.start) ** t


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """Exponential moving average with bias correction: avg_i = beta * avg_{i-1} + (1 - beta)
    * loss_i (avg_-1 = 0), smoothed_i = avg_i / (1 - beta ** (i + 1)); so smoothed_0 = loss_0
    and a constant loss stays constant. Non-finite once a loss is non-finite."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def stop_index(smoothed: list[float], factor: float = DIVERGE_FACTOR) -> int:
    """How many points to keep: up to and including the first whose smoothed loss exceeds
    `factor` x the minimum so far; a non-finite one and everything after it is dropped."""
    best = math.inf
    for i, s in enumerate(smoothed):
        if not math.isfinite(s):
            return i
        best = min(best, s)
        if s > factor * best:
            return i + 1
    return len(smoothed)


def suggest(lrs: list[float], smoothed: list[float],
            skip_start: int | None = None) -> tuple[float | None, float]:
    """(lr of the steepest descent of the smoothed loss per log10(lr), lr of the minimum).

    The steepest point is searched among the points below the minimum, after the first
    `skip_start` (default: 5% of the points; the first averages are over few batches and
    noisy). None when the loss never fell (the minimum is among the first points)."""
    import numpy as np

    s = np.asarray(smoothed, dtype=float)
    x = np.log10(np.asarray(lrs, dtype=float))
    i_min = int(np.argmin(s))
    skip = len(s) // 20 if skip_start is None else skip_start
    lo = min(skip, max(0, i_min - 2))
    if len(s) < 3 or i_min - lo < 2:
        return None, float(lrs[i_min])
    grad = np.gradient(s, x)  # d loss / d log10(lr), central differences
    i = lo + int(np.argmin(grad[lo:i_min]))
    return float(lrs[i]), float(lrs[i_min])


def round2(v: float) -> str:
    """2 significant digits, written so that YAML and float() both read a number."""
    mant, _, exp = f"{v:.2g}".partition("e")  # YAML reads 1e-05 as a string, 1.0e-05 a float
    return mant + ("" if "." in mant else ".0") + (f"e{exp}" if exp else "")


def sweep_command(recipe: str | None, overrides: list[str], lr: float) -> tuple[list[str], str]:
    """(grid values, `trainlab sweep` command line) for lr / 3, lr, lr * 3. The lr-find's own
    overrides are kept except optim.lr (the grid sets it) and run.dir (the sweep sets it)."""
    grid = [round2(lr / GRID_FACTOR), round2(lr), round2(lr * GRID_FACTOR)]
    keep = [o for o in overrides if o.split("=", 1)[0].strip() not in ("optim.lr", "run.dir")]
    argv = ["trainlab", "sweep", *([recipe] if recipe else []), *keep,
            "--grid", "optim.lr=" + ",".join(grid)]
    return grid, shlex.join(argv)


def _read_points(out: Path) -> tuple[list[float], list[float]]:
    """(lrs, losses) from the Trainer's per-step train records, paired as described above."""
    from trainlab.engine.sinks import read_jsonl

    recs = sorted((r for r in read_jsonl(out / "metrics.jsonl") if r.get("kind") == "train"),
                  key=lambda r: r["step"])
    lrs, losses = [], []
    for before, after in zip(recs, recs[1:], strict=False):
        loss = after.get("loss")  # None: non-finite (the sink writes nan/inf as null)
        lrs.append(before["lr"])
        losses.append(loss if isinstance(loss, (int, float)) else math.nan)
    return lrs, losses


def check_range(start: float, end: float, steps: int) -> None:
    """--start / --end / --steps make a range test, or a TrainlabError saying how."""
    if not (0 < start < end) or steps < 5:
        raise TrainlabError(
            f"lr-find needs 0 < --start < --end and --steps >= 5 (got --start {start:g} --end "
            f"{end:g} --steps {steps}); for example --start 1e-7 --end 10 --steps 200.")


def run_lr_find(cfg: Any, start: float, end: float, steps: int, out: Path) -> dict[str, Any]:
    """Train `steps` optimizer steps with lr growing from `start` to `end` (the Trainer, one
    process) and write lr_find.csv / .png / .json into `out`; returns what lr_find.json holds
    (without the sweep command, which needs the command line)."""
    import torch

    from trainlab.config.load import dump_yaml
    from trainlab.dist.env import detect
    from trainlab.engine.checkpoint import atomic_write_text
    from trainlab.engine.checks import check_config
    from trainlab.engine.parts import resolve_device
    from trainlab.engine.run import assemble
    from trainlab.engine.sinks import Console, MetricsFile, TensorBoard
    from trainlab.engine.trainer import Interrupted, Trainer, TrainState
    from trainlab.errors import TrainingDiverged

    check_range(start, end, steps)
    check_config(cfg)
    env = detect()
    if env.distributed:
        raise TrainlabError(
            f"lr-find runs as one process, but this is rank {env.rank} of {env.world_size} "
            f"(torchrun or srun with several tasks). Run it as a plain `trainlab lr-find` "
            f"(on Slurm: one task, e.g. srun --ntasks=1); the lr it finds is for the global "
            f"batch train.batch_size, so keep that the same for the sweep.")
    device = resolve_device(cfg.run.device, env)
    run = assemble(cfg, env, device)
    method, optimizer, scaler, loader = run.method, run.optimizer, run.scaler, run.train_loader
    t, steps_per_epoch = cfg.train, run.steps_per_epoch
    # one update more than rows: the loss after the last lr is measured on the next batch
    epochs = -(-(steps + 1) // steps_per_epoch)
    schedule = ExpSchedule(start, end, steps)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dir=str(out)))
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))
    console = Console(True, cfg.run.progress)
    console.print(
        f"lr-find: {cfg.method.name} {cfg.model.name} on {cfg.data.name}, {cfg.optim.name}, "
        f"batch {t.batch_size * t.accum_steps}; lr {start:g} -> {end:g} over {steps} steps "
        f"({epochs} epoch{'s' * (epochs > 1)} of {steps_per_epoch} steps); device {device}; "
        f"out {out}")
    train_module = torch.compile(method) if t.compile else method
    trainer = Trainer(method, optimizer, schedule, loader, None, epochs=epochs,
                      accum_steps=t.accum_steps, grad_clip=t.grad_clip, log_every=1,
                      run_dir=out, is_main=True, console=console,
                      metrics=MetricsFile(out, True), tb=TensorBoard(out, True, False),
                      checkpoint_extra=dict, train_module=train_module,
                      precision=t.precision, scaler=scaler, channels_last=t.channels_last,
                      max_steps=steps + 1)
    ended = "completed"
    try:
        trainer.fit(TrainState())
    except TrainingDiverged:
        ended = "loss became nan/inf"  # expected at high lr: the records so far are the result
    except Interrupted:
        ended = "interrupted"
    finally:  # weights trained at absurd lrs: nothing to resume or evaluate
        import shutil

        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return analyse(out, start, end, steps, ended)


def analyse(out: Path, start: float, end: float, steps: int, ended: str) -> dict[str, Any]:
    """Smooth, cut and suggest from `out/metrics.jsonl`; write lr_find.csv and lr_find.png."""
    from trainlab.engine.checkpoint import atomic_write_text

    lrs, losses = _read_points(out)
    smoothed = smooth(losses)
    n = stop_index(smoothed)
    if n and smoothed[n - 1] > DIVERGE_FACTOR * min(smoothed[:n]):
        ended = f"stopped: smoothed loss > {DIVERGE_FACTOR:g}x its minimum"
    elif n < len(smoothed):
        ended = "loss became nan/inf"
    lrs, losses, smoothed = lrs[:n], losses[:n], smoothed[:n]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["step", "lr", "loss", "smoothed"])
    for i, (lr, loss, s) in enumerate(zip(lrs, losses, smoothed, strict=True)):
        w.writerow([i, f"{lr:.6g}", f"{loss:.6g}", f"{s:.6g}"])
    atomic_write_text(out / "lr_find.csv", buf.getvalue())
    if n == 0:
        raise TrainlabError(
            f"lr-find recorded no finite loss (the first steps from --start {start:g} already "
            f"diverged or the run stopped at once); see {out / 'metrics.jsonl'}. Start lower, "
            f"e.g. --start {start / 100:g}, or check the data and model with `trainlab train`.")
    suggested, min_lr = suggest(lrs, smoothed)
    res = {"suggested_lr": suggested, "min_loss_lr": min_lr, "min_loss_lr_div10": min_lr / 10,
           "min_smoothed_loss": min(smoothed), "start": start, "end": end, "steps": steps,
           "steps_used": n, "last_lr": lrs[-1], "ended": ended, "beta": BETA}
    plot(lrs, losses, smoothed, suggested, min_lr, out / "lr_find.png")
    return res


def plot(lrs: list[float], losses: list[float], smoothed: list[float], suggested: float | None,
         min_lr: float, path: Path) -> None:
    """Smoothed (and raw, faint) loss against lr on a log axis; suggestion and minimum marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainlab.engine.checkpoint import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(lrs, losses, color="0.75", lw=0.8, label="loss per step")
    ax.plot(lrs, smoothed, color="C0", lw=1.8, label=f"smoothed (beta {BETA})")
    i_min = lrs.index(min_lr)
    ax.plot([min_lr], [smoothed[i_min]], "o", color="C3", label=f"minimum, lr {min_lr:.2g}")
    if suggested is not None:
        i = lrs.index(suggested)
        ax.axvline(suggested, color="C2", ls="--", lw=1)
        ax.plot([suggested], [smoothed[i]], "o", color="C2",
                label=f"steepest descent, lr {suggested:.2g} (suggested)")
    lo = min(smoothed[i_min], *losses[:i_min + 1])
    hi = max(smoothed[:i_min + 1])  # the blow-up after the minimum is cut off
    span = max(hi - lo, 1e-3 * abs(lo) + 1e-9)
    ax.set_ylim(lo - 0.1 * span, hi + 0.6 * span)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("lr range test")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def _default_out(recipe_name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, i = Path("runs") / f"lr-find-{recipe_name}-{stamp}", 1
    while path.exists():
        path, i = Path("runs") / f"lr-find-{recipe_name}-{stamp}-{i}", i + 1
    return path


def cmd(ns: argparse.Namespace) -> int:
    """Run the range test, write its files, print the suggestion and a sweep command."""
    from trainlab.cli import _recipe_name, _split_recipe
    from trainlab.config.load import build_config
    from trainlab.engine.checkpoint import atomic_write_json

    check_range(ns.start, ns.end, ns.steps)
    recipe, overrides = _split_recipe(ns.args)
    cfg = build_config(recipe, overrides)
    out = Path(ns.out or cfg.run.dir or _default_out(_recipe_name(recipe)))
    res = run_lr_find(cfg, ns.start, ns.end, ns.steps, out)
    lr = res["suggested_lr"]
    grid, command = sweep_command(recipe, overrides, lr) if lr else (None, None)
    atomic_write_json(out / "lr_find.json", {**res, "grid": grid and [float(g) for g in grid],
                                              "sweep_command": command})
    print(f"\n{res['steps_used']} of {res['steps']} steps used (lr {res['start']:g} -> "
          f"{res['last_lr']:.3g}; {res['ended']})")
    print(f"lowest smoothed loss {res['min_smoothed_loss']:.4f} at lr {res['min_loss_lr']:.2g}"
          f"  (min-loss lr / 10 = {res['min_loss_lr_div10']:.2g})")
    if lr is None:
        print(f"no suggestion: the loss did not fall before its minimum at lr "
              f"{res['min_loss_lr']:.2g}; rerun with a lower --start (e.g. --start "
              f"{res['start'] / 100:g}) or more --steps")
    else:
        print(f"suggested lr {lr:.2g}  (steepest descent of the smoothed loss)")
        print(f"\nsweep around it:\n  {command}")
    print(f"\nplot {out / 'lr_find.png'}; data {out / 'lr_find.csv'}, {out / 'lr_find.json'}")
    return 0


def register(sub: Any) -> None:
    """Add `trainlab lr-find` to the CLI."""
    p = sub.add_parser(
        "lr-find", help="learning-rate range test: loss vs exponentially growing lr",
        description="Train with an lr growing exponentially from --start to --end over --steps "
        "optimizer steps (same data, model, method, optimizer and batch as `trainlab train` "
        "with these arguments); write the loss per lr (csv, png, json) and suggest an lr and "
        "a `trainlab sweep` command around it.",
        epilog="Overrides are key=value pairs on top of the recipe, e.g. model.name=vit_tiny "
        "train.batch_size=256. The schedule keys (sched.*) and optim.lr are not used.")
    p.add_argument("args", nargs="*", metavar="[RECIPE] [key=value]")
    p.add_argument("--start", type=float, default=1e-7, help="first lr (default: 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="last lr (default: 10)")
    p.add_argument("--steps", type=int, default=200,
                   help="optimizer steps, one lr each (default: 200)")
    p.add_argument("--out", help="output folder (default: run.dir if given, else "
                   "runs/lr-find-<recipe>-<timestamp>)")
    p.set_defaults(func=cmd)

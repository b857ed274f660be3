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

import csv
import dataclasses
import io
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainlab.config.load import build_config, dump_yaml
from trainlab.config.schema import Config
from trainlab.dist.env import detect
from trainlab.dist.setup import resolve_device
from trainlab.engine.assemble import assemble, build_trainer
from trainlab.engine.checks import check_config
from trainlab.engine.sinks import Console, MetricsFile, Sinks, TensorBoard, read_jsonl
from trainlab.engine.trainer import TrainState
from trainlab.errors import Interrupted, TrainingDiverged, TrainlabError
from trainlab.files import atomic_write_json, atomic_write_text, recipe_name, timestamped_dir
from trainlab.report.plots import lr_find_plot

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


def run_lr_find(cfg: Config, start: float, end: float, steps: int, out: Path) -> dict[str, Any]:
    """Train `steps` optimizer steps with lr growing from `start` to `end` (the Trainer, one
    process, no checkpoints) and write lr_find.csv / .png into `out`; returns what
    lr_find.json holds (without the sweep command, which needs the command line)."""
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
    t, steps_per_epoch = cfg.train, run.steps_per_epoch
    # one update more than rows: the loss after the last lr is measured on the next batch
    epochs = -(-(steps + 1) // steps_per_epoch)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dir=str(out)))
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))
    console = Console(True, cfg.run.progress)
    console.print(
        f"lr-find: {cfg.method.name} {cfg.model.name} on {cfg.data.name}, {cfg.optim.name}, "
        f"batch {t.batch_size * t.accum_steps}; lr {start:g} -> {end:g} over {steps} steps "
        f"({epochs} epoch{'s' * (epochs > 1)} of {steps_per_epoch} steps); device {device}; "
        f"out {out}")
    sinks = Sinks(console, MetricsFile(out, True), TensorBoard(out, True, False))
    opt = dataclasses.replace(run.opt, schedule=ExpSchedule(start, end, steps))
    trainer = build_trainer(cfg, opt, run.train_loader, sinks, epochs=epochs, log_every=1,
                            max_steps=steps + 1)  # no checkpointer: nothing is saved
    ended = "completed"
    try:
        trainer.fit(TrainState())
    except TrainingDiverged:
        ended = "loss became nan/inf"  # expected at high lr: the records so far are the result
    except Interrupted:
        ended = "interrupted"
    return analyse(out, start, end, steps, ended)


def analyse(out: Path, start: float, end: float, steps: int, ended: str) -> dict[str, Any]:
    """Smooth, cut and suggest from `out/metrics.jsonl`; write lr_find.csv and lr_find.png."""
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
    lr_find_plot(lrs, losses, smoothed, suggested, min_lr, out / "lr_find.png", BETA)
    return res


def lr_find_command(recipe: str | None, overrides: list[str], start: float, end: float,
                    steps: int, out: str | None) -> None:
    """`trainlab lr-find`: run the range test, write its files, print the suggestion and a
    sweep command around it."""
    check_range(start, end, steps)
    cfg = build_config(recipe, overrides)
    where = Path(out or cfg.run.dir or timestamped_dir("runs", f"lr-find-{recipe_name(recipe)}"))
    res = run_lr_find(cfg, start, end, steps, where)
    lr = res["suggested_lr"]
    grid, command = sweep_command(recipe, overrides, lr) if lr else (None, None)
    atomic_write_json(where / "lr_find.json", {**res, "grid": grid and [float(g) for g in grid],
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
    print(f"\nplot {where / 'lr_find.png'}; data {where / 'lr_find.csv'}, "
          f"{where / 'lr_find.json'}")

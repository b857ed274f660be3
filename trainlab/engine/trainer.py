"""The training loop. There is exactly one; methods plug in through `forward(batch) -> dict`."""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from trainlab.data.loader import DeviceLoader
from trainlab.engine.checkpoint import rng_state, save_checkpoint
from trainlab.engine.sinks import Console, MetricsFile, TensorBoard
from trainlab.errors import TrainingDiverged, TrainlabError
from trainlab.methods.base import Method
from trainlab.optim.schedule import Schedule


@dataclass
class TrainState:
    """Where training is. Saved in every checkpoint; a resume continues from exactly here."""

    epoch: int = 0  # current epoch, 0-based
    batch: int = 0  # next micro-batch of the current epoch
    step: int = 0  # optimizer steps done
    best_val_acc: float | None = None
    best_epoch: int | None = None
    wall_s: float = 0.0  # training wall time over every segment of the run, seconds


class Interrupted(TrainlabError):
    """SIGINT/SIGTERM: a checkpoint was saved; rerun with run.resume=auto to continue."""


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked after each optimizer step (a 2nd Ctrl-C kills)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for s in self.SIGNALS:
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


@torch.no_grad()
def evaluate(method: Method, loader: DeviceLoader) -> dict[str, float]:
    """Mean of each metric of `method.evaluate` over the whole split (weighted by batch size)."""
    was_training = method.training
    method.eval()
    sums: dict[str, Tensor] = {}
    n = 0
    for batch in loader.epoch(0):
        out = method.evaluate(batch)
        b = len(batch[1])
        for k, v in out.items():
            sums[k] = sums.get(k, 0) + v.detach().float() * b
        n += b
    method.train(was_training)
    return {k: (v / max(n, 1)).item() for k, v in sums.items()}


class Trainer:
    """Runs `method` over `train_loader` for `epochs`, evaluating on `val_loader` each epoch."""

    def __init__(
        self,
        method: Method,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        train_loader: DeviceLoader,
        val_loader: DeviceLoader | None,
        *,
        epochs: int,
        accum_steps: int,
        grad_clip: float,
        log_every: int,
        run_dir: Path,
        is_main: bool,
        console: Console,
        metrics: MetricsFile,
        tb: TensorBoard,
        checkpoint_extra: Callable[[], dict[str, Any]],
    ) -> None:
        self.method, self.optimizer, self.schedule = method, optimizer, schedule
        self.train_loader, self.val_loader = train_loader, val_loader
        self.epochs, self.accum, self.grad_clip = epochs, accum_steps, grad_clip
        self.log_every = max(1, log_every)
        self.run_dir, self.is_main = run_dir, is_main
        self.console, self.metrics, self.tb = console, metrics, tb
        self.checkpoint_extra = checkpoint_extra
        self.device = next(method.parameters()).device
        self.check_every_step = self.device.type == "cpu"  # .item() costs a sync on GPUs
        self.stop = StopFlag()

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_loader) / self.accum)

    # ---------------------------------------------------------------- checkpoints
    def save(self, name: str, state: TrainState) -> Path:
        path = self.run_dir / "checkpoints" / name
        if self.is_main:
            payload = {
                "format": "trainlab/1",
                "model": self.method.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "state": dataclasses.asdict(state),
                "rng": rng_state(),
                **self.checkpoint_extra(),
            }
            save_checkpoint(path, payload)
        return path

    def evaluate(self, loader: DeviceLoader) -> dict[str, float]:
        return evaluate(self.method, loader)

    # ---------------------------------------------------------------- training
    def _set_lr(self, step: int) -> float:
        lr = self.schedule(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        return lr

    def _diverged(self, loss: float, state: TrainState, lr: float) -> TrainingDiverged:
        return TrainingDiverged(
            f"The training loss became {loss} at optimizer step {state.step} (epoch "
            f"{state.epoch + 1}, lr {lr:.3g}); the run stopped. The last good checkpoint, if "
            f"any, is {self.run_dir / 'checkpoints' / 'last.pt'}. Usually the learning rate is "
            f"too high for this model and batch size: try a smaller optim.lr (e.g. "
            f"optim.lr={lr / 3:.2g}), a longer warmup (sched.warmup_epochs), or gradient "
            f"clipping (train.grad_clip=1.0)."
        )

    def fit(self, state: TrainState) -> TrainState:
        """Train from `state` to the last epoch. Raises `Interrupted` on SIGINT/SIGTERM."""
        with self.stop:
            return self._fit(state)

    def _fit(self, state: TrainState) -> TrainState:
        method, opt = self.method, self.optimizer
        method.train()
        n_batches = len(self.train_loader)
        seg_start = time.perf_counter()
        wall0 = state.wall_s
        lr = self.schedule(state.step)
        while state.epoch < self.epochs:
            epoch = state.epoch
            ep_sums: dict[str, Tensor] = {}
            ep_n, win_n, win_t = 0, 0, time.perf_counter()
            ep_t0 = win_t
            win_sums: dict[str, Tensor] = {}
            self.console.start_epoch(epoch, self.epochs, n_batches, state.batch)
            for j, batch in enumerate(self.train_loader.epoch(epoch, state.batch), state.batch):
                pos = j % self.accum
                group = min(self.accum, n_batches - (j - pos))  # micro-batches in this step
                if pos == 0:
                    lr = self._set_lr(state.step)
                out = method(batch)
                (out["loss"] / group).backward()
                b = len(batch[1])
                for k, v in out.items():
                    v = v.detach().float() * b
                    ep_sums[k] = ep_sums.get(k, 0) + v
                    win_sums[k] = win_sums.get(k, 0) + v
                ep_n, win_n = ep_n + b, win_n + b
                if pos != group - 1:
                    continue
                if self.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(method.parameters(), self.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                state.step += 1
                state.batch = j + 1
                if self.check_every_step and not math.isfinite(out["loss"].item()):
                    raise self._diverged(out["loss"].item(), state, lr)
                self.console.update(group)
                if state.step % self.log_every == 0:
                    rec = {k: (v / win_n).item() for k, v in win_sums.items()}
                    if not math.isfinite(rec["loss"]):
                        raise self._diverged(rec["loss"], state, lr)
                    dt = time.perf_counter() - win_t
                    rec.update(kind="train", epoch=epoch, step=state.step, lr=lr,
                               img_per_s=win_n / max(dt, 1e-9))
                    self.metrics.log(rec)
                    self.tb.log(rec)
                    self.console.update(0, {"loss": f"{rec['loss']:.4f}", "lr": f"{lr:.2e}",
                                            "img/s": f"{rec['img_per_s']:.0f}",
                                            **{k: f"{v:.3f}" for k, v in rec.items()
                                               if k == "acc"}})
                    win_sums, win_n, win_t = {}, 0, time.perf_counter()
                if self.stop.signum is not None:
                    state.wall_s = wall0 + time.perf_counter() - seg_start
                    return self._interrupted(state)
            self.console.end_epoch()
            img_per_s = ep_n / max(time.perf_counter() - ep_t0, 1e-9)
            state.epoch, state.batch = epoch + 1, 0
            state.wall_s = wall0 + time.perf_counter() - seg_start
            self._end_epoch(state, epoch, lr, ep_sums, ep_n, img_per_s)
            if self.stop.signum is not None:
                return self._interrupted(state)
        return state

    def _end_epoch(self, state: TrainState, epoch: int, lr: float,
                   ep_sums: dict[str, Tensor], ep_n: int, img_per_s: float) -> None:
        train = {f"train_{k}": (v / max(ep_n, 1)).item() for k, v in ep_sums.items()}
        if ep_sums and not math.isfinite(train["train_loss"]):
            raise self._diverged(train["train_loss"], state, lr)
        val: dict[str, float] = {}
        if self.val_loader is not None and len(self.val_loader.y) > 0:
            val = {f"val_{k}": v for k, v in self.evaluate(self.val_loader).items()}
        rec = {"kind": "epoch", "epoch": epoch + 1, "step": state.step, "lr": lr, **train, **val,
               "img_per_s": img_per_s, "wall_s": state.wall_s}
        improved = "val_acc" in val and (state.best_val_acc is None
                                         or val["val_acc"] > state.best_val_acc)
        if improved:
            state.best_val_acc, state.best_epoch = val["val_acc"], epoch + 1
        self.metrics.log(rec)
        self.tb.log(rec)
        self.save("last.pt", state)
        if improved or "val_acc" not in val:
            self.save("best.pt", state)
        parts = [f"epoch {epoch + 1}/{self.epochs}", f"step {state.step}"]
        parts += [f"{k} {v:.4f}" for k, v in {**train, **val}.items()]
        parts += [f"lr {lr:.2e}", f"{img_per_s:.0f} img/s", f"{state.wall_s:.1f}s"]
        self.console.print("  ".join(parts))

    def _interrupted(self, state: TrainState) -> TrainState:
        self.console.end_epoch()
        path = self.save("last.pt", state)
        name = signal.Signals(self.stop.signum).name
        err = Interrupted(
            f"Received {name}: saved a checkpoint at optimizer step {state.step} (epoch "
            f"{state.epoch + 1}, batch {state.batch}) to {path}. Run the same command with "
            f"run.dir={self.run_dir} run.resume=auto to continue exactly where it stopped."
        )
        err.exit_code = 128 + int(self.stop.signum)
        raise err

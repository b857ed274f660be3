"""The training loop. There is exactly one; methods plug in through `forward(batch) -> dict`."""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from trainlab.config.schema import Config
from trainlab.dist.setup import all_reduce_sum
from trainlab.engine.checkpoint import Checkpointer
from trainlab.engine.ema import EMA
from trainlab.engine.evaluate import autocast, evaluate, reduce_sums
from trainlab.engine.sinks import Sinks
from trainlab.errors import Interrupted, TrainingDiverged
from trainlab.methods.base import Method
from trainlab.optim.schedule import Schedule

EpochHook = Callable[[int], dict[str, float]]  # after validation: epoch (1-based) -> metrics


@dataclass
class TrainState:
    """Where training is. Saved in every checkpoint; a resume continues from exactly here."""

    epoch: int = 0  # current epoch, 0-based
    batch: int = 0  # next micro-batch of the current epoch
    step: int = 0  # optimizer steps done
    best_val_acc: float | None = None
    best_epoch: int | None = None
    wall_s: float = 0.0  # training wall time over every segment of the run, seconds


class MetricSums:
    """Per-sample sums of a method's outputs over a window or an epoch, kept on the device as
    one vector: a step costs one stack, one multiply and one add per accumulator, not a few
    kernels per metric (it matters for small models on GPUs)."""

    def __init__(self) -> None:
        self.keys: tuple[str, ...] = ()
        self.vec: Tensor | None = None  # [len(keys)] float32 sums
        self.n = 0  # samples

    @staticmethod
    def values(out: dict[str, Tensor], b: int) -> Tensor:
        """out's values (scalars, means over a batch of b) as per-sample sums [len(out)]."""
        return torch.stack([v.detach().float() for v in out.values()]) * b

    def add(self, out: dict[str, Tensor], vals: Tensor, b: int) -> None:
        """Add a batch of `b` samples: `vals` = `values(out, b)`."""
        keys = tuple(out)
        if self.vec is None:
            self.keys, self.vec = keys, vals.clone()
        elif keys == self.keys:
            self.vec += vals
        else:  # the method returned other metrics this step (rare): merge by name
            merged = self.as_dict()
            for k, v in zip(keys, vals.unbind(), strict=True):
                merged[k] = merged.get(k, 0) + v
            self.keys, self.vec = tuple(merged), torch.stack(list(merged.values()))
        self.n += b

    def as_dict(self) -> dict[str, Tensor]:
        return dict(zip(self.keys, self.vec.unbind(), strict=True)) if self.vec is not None else {}

    def nonfinite_loss(self) -> Tensor | bool:
        """A device scalar: the summed loss is nan/inf (so some step's loss was)."""
        if self.vec is None or "loss" not in self.keys:
            return False
        return ~torch.isfinite(self.vec[self.keys.index("loss")])


class StopFlag:
    """Turns SIGINT/SIGTERM/SIGUSR1 (Slurm's time-limit warning) into a flag checked after each
    optimizer step (a 2nd Ctrl-C kills)."""

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGUSR1")
                    if hasattr(signal, n))

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


@dataclass
class Optimization:
    """What one optimizer step touches.

    `train_module` is what the forward pass calls: the method itself, or the method wrapped in
    DistributedDataParallel and/or torch.compile; `method.model` (the plain module) is what is
    checkpointed and evaluated. `ema_method` wraps the EMA weights for evaluation.
    """

    method: Method
    optimizer: torch.optim.Optimizer
    schedule: Schedule  # lr(optimizer step)
    scaler: torch.amp.GradScaler | None = None
    train_module: nn.Module | None = None
    ema: EMA | None = None
    ema_method: Method | None = None


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs: length, accumulation, clipping, precision, logging cadence."""

    epochs: int
    accum_steps: int = 1  # micro-batches per optimizer step
    grad_clip: float = 0.0  # max global grad norm; 0 -> off
    log_every: int = 50  # optimizer steps per train record
    precision: str = "fp32"  # fp32 | bf16 | fp16
    channels_last: bool = False
    max_steps: int | None = None  # stop after this many optimizer steps, mid-epoch (lr-find)

    @classmethod
    def from_config(cls, cfg: Config, **changes: Any) -> LoopSettings:
        t = cfg.train
        base = cls(epochs=t.epochs, accum_steps=t.accum_steps, grad_clip=t.grad_clip,
                   log_every=cfg.run.log_every, precision=t.precision,
                   channels_last=t.channels_last)
        return dataclasses.replace(base, **changes)


class Trainer:
    """Runs `opt.method` over `train_loader` for `loop.epochs`, evaluating on `val_loader`
    after each epoch and calling `hooks`; writes through `sinks`. With a `checkpointer` it
    saves last.pt/best.pt after every epoch and on a stop signal; without one (lr-find,
    benchmarks) nothing is written but the sinks' records.
    """

    def __init__(self, opt: Optimization, loop: LoopSettings, train_loader: Any,
                 val_loader: Any | None, sinks: Sinks, checkpointer: Checkpointer | None = None,
                 hooks: Sequence[EpochHook] = ()) -> None:
        self.opt, self.loop = opt, loop
        self.method, self.optimizer, self.schedule = opt.method, opt.optimizer, opt.schedule
        self.train_module = opt.train_module if opt.train_module is not None else opt.method
        self.train_loader, self.val_loader = train_loader, val_loader
        self.epochs, self.accum, self.grad_clip = loop.epochs, loop.accum_steps, loop.grad_clip
        self.log_every = max(1, loop.log_every)
        self.sinks, self.checkpointer = sinks, checkpointer
        self.console, self.metrics, self.tb = sinks.console, sinks.metrics, sinks.tb
        self.precision, self.scaler = loop.precision, opt.scaler
        self.ema, self.ema_method = opt.ema, opt.ema_method
        self.channels_last = loop.channels_last
        self.epoch_hooks = list(hooks)
        self.max_steps = loop.max_steps
        self.device = next(opt.method.parameters()).device
        self.distributed = dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        # stop/NaN flags are read (and agreed on by all ranks) every `sync_every` steps:
        # every step on the CPU, every 10 on accelerators where a read costs a device sync
        self.sync_every = 1 if self.device.type == "cpu" else 10
        self.stop = StopFlag()

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_loader) / self.accum)

    # ---------------------------------------------------------------- checkpoints
    def save(self, name: str, state: TrainState) -> Path | None:
        """Checkpoint through the checkpointer (every rank must call it: RNG states are
        gathered); None when this trainer has no checkpointer."""
        if self.checkpointer is None:
            return None
        payload = {
            "model": self.method.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": dataclasses.asdict(state),
        }
        if self.scaler is not None:
            payload["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            payload["ema"] = self.ema.state_dict()
        return self.checkpointer.save(name, payload)

    def evaluate(self, loader: Any, ema: bool = False) -> dict[str, float]:
        method = self.ema_method if ema else self.method
        assert method is not None
        return evaluate(method, loader, self.precision)

    # ---------------------------------------------------------------- training
    def _set_lr(self, step: int) -> float:
        lr = self.schedule(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        return lr

    def _diverged(self, loss: float | str, state: TrainState, lr: float) -> TrainingDiverged:
        return TrainingDiverged(
            f"The training loss became {loss} at optimizer step {state.step} (epoch "
            f"{state.epoch + 1}, lr {lr:.3g}); the run stopped.{self._last_good()} Usually the "
            f"learning rate is too high for this model and batch size: try a smaller optim.lr "
            f"(e.g. optim.lr={lr / 3:.2g}), a longer warmup (sched.warmup_epochs), or gradient "
            f"clipping (train.grad_clip=1.0)."
        )

    def _last_good(self) -> str:
        if self.checkpointer is None:
            return ""
        return f" The last good checkpoint, if any, is {self.checkpointer.path('last.pt')}."

    def _flags(self, bad: Tensor | bool) -> tuple[bool, bool]:
        """(stop requested on any rank, non-finite loss on any rank) — agreed by all ranks."""
        vec = torch.stack([torch.tensor(float(self.stop.signum is not None), device=self.device),
                           torch.as_tensor(bad, device=self.device).float()])
        all_reduce_sum(vec)
        stop, nonfinite = vec.tolist()
        return stop > 0, nonfinite > 0

    def _backward(self, loss: Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _optimizer_step(self, step: int) -> None:
        """Optimizer step `step` (0-based): clip, step, zero the gradients, then the EMA and the
        method's own update after the step (`Method.end_step`, e.g. DINO's teacher EMA)."""
        opt = self.optimizer
        if self.scaler is not None:
            if self.grad_clip > 0:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.grad_clip)
            self.scaler.step(opt)
            self.scaler.update()
        else:
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.grad_clip)
            opt.step()
        opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.method.model, step)
        self.method.end_step(step, self.steps_per_epoch, self.schedule.total_steps)

    def fit(self, state: TrainState) -> TrainState:
        """Train from `state` to the last epoch. Raises `Interrupted` on SIGINT/SIGTERM."""
        with self.stop:
            return self._fit(state)

    def _fit(self, state: TrainState) -> TrainState:
        self.method.train()
        n_batches = len(self.train_loader)
        seg_start, wall0 = time.perf_counter(), state.wall_s
        lr = self.schedule(state.step)
        ddp = hasattr(self.train_module, "no_sync")
        while state.epoch < self.epochs:
            epoch = state.epoch
            ep_sums, win_sums = MetricSums(), MetricSums()
            win_t = ep_t0 = time.perf_counter()
            self.console.start_epoch(epoch, self.epochs, n_batches, state.batch)
            for j, batch in enumerate(self.train_loader.epoch(epoch, state.batch), state.batch):
                pos = j % self.accum
                group = min(self.accum, n_batches - (j - pos))  # micro-batches in this step
                if pos == 0:
                    lr = self._set_lr(state.step)
                    self.method.begin_step(state.step, self.steps_per_epoch,
                                           self.schedule.total_steps)
                if self.channels_last:
                    batch = (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])
                sync = nullcontext() if not ddp or pos == group - 1 else self.train_module.no_sync()
                with sync:
                    with autocast(self.device, self.precision):
                        out = self.train_module(batch)
                    self._backward(out["loss"] / group)
                b = len(batch[1])
                vals = MetricSums.values(out, b)
                ep_sums.add(out, vals, b)
                win_sums.add(out, vals, b)
                if pos != group - 1:
                    continue
                self._optimizer_step(state.step)
                state.step += 1
                state.batch = j + 1
                self.console.update(group)
                if state.step % self.sync_every == 0 or state.batch == n_batches:
                    stop, nonfinite = self._flags(ep_sums.nonfinite_loss())
                    if nonfinite:
                        raise self._diverged("nan or inf", state, lr)
                    if stop:
                        state.wall_s = wall0 + time.perf_counter() - seg_start
                        return self._interrupted(state)
                if state.step % self.log_every == 0:
                    self._log_window(win_sums, win_t, epoch, state.step, lr)
                    win_sums, win_t = MetricSums(), time.perf_counter()
                if self.max_steps is not None and state.step >= self.max_steps:
                    self.console.end_epoch()
                    state.wall_s = wall0 + time.perf_counter() - seg_start
                    return state
            self.console.end_epoch()
            ep_seconds = time.perf_counter() - ep_t0
            state.epoch, state.batch = epoch + 1, 0
            state.wall_s = wall0 + time.perf_counter() - seg_start
            self._end_epoch(state, epoch, lr, ep_sums, ep_seconds)
            if self._flags(ep_sums.nonfinite_loss())[0]:
                return self._interrupted(state)
        return state

    def _log_window(self, sums: MetricSums, t0: float, epoch: int, step: int,
                    lr: float) -> None:
        means, n_all = reduce_sums(sums.as_dict(), sums.n, self.device)
        rec: dict[str, Any] = dict(means)
        rec.update(kind="train", epoch=epoch, step=step, lr=lr,
                   img_per_s=n_all / max(time.perf_counter() - t0, 1e-9))
        self.metrics.log(rec)
        self.tb.log(rec)
        post = {"loss": f"{rec['loss']:.4f}", "lr": f"{lr:.2e}", "img/s": f"{rec['img_per_s']:.0f}"}
        if "acc" in rec:
            post["acc"] = f"{rec['acc']:.3f}"
        self.console.update(0, post)

    def _end_epoch(self, state: TrainState, epoch: int, lr: float,
                   ep_sums: MetricSums, ep_seconds: float) -> None:
        means, n_all = reduce_sums(ep_sums.as_dict(), ep_sums.n, self.device)
        train = {f"train_{k}": v for k, v in means.items()}
        img_per_s = n_all / max(ep_seconds, 1e-9)
        if ep_sums.n and not math.isfinite(train["train_loss"]):
            raise self._diverged(train["train_loss"], state, lr)
        val: dict[str, float] = {}
        if self.val_loader is not None and len(self.val_loader.y) > 0:
            val = {f"val_{k}": v for k, v in self.evaluate(self.val_loader).items()}
            if self.ema_method is not None:
                val.update({f"val_ema_{k}": v
                            for k, v in self.evaluate(self.val_loader, ema=True).items()})
        for hook in self.epoch_hooks:  # e.g. kNN monitor, MAE pictures; every rank calls them
            val.update(hook(epoch + 1))
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
        name = (signal.Signals(self.stop.signum).name if self.stop.signum is not None
                else "a stop signal on another rank")
        where = f"optimizer step {state.step} (epoch {state.epoch + 1}, batch {state.batch})"
        if path is None:
            err = Interrupted(f"Received {name}: stopped at {where}; nothing was saved.")
        else:
            run_dir = path.parent.parent
            err = Interrupted(
                f"Received {name}: saved a checkpoint at {where} to {path}. Run the same "
                f"command with run.dir={run_dir} run.resume=auto to continue exactly where it "
                f"stopped.")
        err.signum = int(self.stop.signum or signal.SIGTERM)
        err.exit_code = 128 + err.signum
        err.checkpoint = path
        raise err

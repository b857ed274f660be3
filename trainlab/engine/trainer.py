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

from trainlab.dist.setup import all_gather_objects, all_reduce_sum
from trainlab.engine.checkpoint import rng_state, save_checkpoint
from trainlab.engine.ema import EMA
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
    """SIGINT/SIGTERM/SIGUSR1: a checkpoint was saved; rerun with run.resume=auto to continue."""

    signum: int = signal.SIGTERM
    checkpoint: Path | None = None


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


@torch.no_grad()
def evaluate(method: Method, loader, precision: str = "fp32") -> dict[str, float]:
    """Mean of each metric of `method.evaluate` over the whole split (weighted by batch size).

    With several ranks each evaluates its slice of every batch and the sums are all-reduced,
    so every sample counts exactly once.
    """
    was_training = method.training
    method.eval()
    device = next(method.parameters()).device
    sums: dict[str, Tensor] = {}
    n = 0
    for batch in loader.epoch(0):
        b = len(batch[1])
        if b == 0:  # a rank's slice of a short last batch can be empty
            continue
        with autocast(device, precision):
            out = method.evaluate(batch)
        for k, v in out.items():
            sums[k] = sums.get(k, 0) + v.detach().float() * b
        n += b
    method.train(was_training)
    return reduce_means(sums, n, device)


def reduce_means(sums: dict[str, Tensor], n: int, device: torch.device) -> dict[str, float]:
    """{name: sum over samples} and a sample count -> global means over all ranks."""
    return reduce_sums(sums, n, device)[0]


def reduce_sums(sums: dict[str, Tensor], n: int,
                device: torch.device) -> tuple[dict[str, float], int]:
    """Like `reduce_means`, also returning the sample count summed over ranks (one all-reduce)."""
    keys = sorted(sums) if sums else []
    if dist.is_initialized():
        names = all_gather_objects(keys)
        keys = sorted({k for ks in names for k in ks})  # type: ignore[union-attr]
    vec = torch.stack([torch.as_tensor(sums.get(k, 0.0), dtype=torch.float32, device=device)
                       for k in keys] + [torch.tensor(float(n), device=device)])
    all_reduce_sum(vec)
    total = vec[-1].item()
    return {k: (vec[i] / max(total, 1.0)).item() for i, k in enumerate(keys)}, int(total)


def autocast(device: torch.device, precision: str):
    """Autocast context for `train.precision` (fp32 = disabled)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


class Trainer:
    """Runs `method` over `train_loader` for `epochs`, evaluating on `val_loader` each epoch.

    `train_module` is what the forward pass calls: the method itself, or the method wrapped
    in DistributedDataParallel and/or torch.compile. `method.model` (the plain module) is
    what is checkpointed and evaluated.
    """

    def __init__(
        self,
        method: Method,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        train_loader: Any,
        val_loader: Any | None,
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
        train_module: nn.Module | None = None,
        precision: str = "fp32",
        scaler: torch.amp.GradScaler | None = None,
        ema: EMA | None = None,
        ema_method: Method | None = None,
        channels_last: bool = False,
        epoch_hooks: Sequence[Callable[[int], dict[str, float]]] = (),
        max_steps: int | None = None,
    ) -> None:
        self.method, self.optimizer, self.schedule = method, optimizer, schedule
        self.train_module = train_module if train_module is not None else method
        self.train_loader, self.val_loader = train_loader, val_loader
        self.epochs, self.accum, self.grad_clip = epochs, accum_steps, grad_clip
        self.log_every = max(1, log_every)
        self.run_dir, self.is_main = run_dir, is_main
        self.console, self.metrics, self.tb = console, metrics, tb
        self.checkpoint_extra = checkpoint_extra
        self.precision, self.scaler = precision, scaler
        self.ema, self.ema_method = ema, ema_method
        self.channels_last = channels_last
        self.epoch_hooks = list(epoch_hooks)  # after validation: epoch (1-based) -> metrics
        self.max_steps = max_steps  # stop after this many optimizer steps, mid-epoch (lr-find)
        self.device = next(method.parameters()).device
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
    def save(self, name: str, state: TrainState) -> Path:
        """Checkpoint (rank 0 writes; every rank must call it: RNG states are gathered)."""
        path = self.run_dir / "checkpoints" / name
        rngs = all_gather_objects(rng_state())
        if self.is_main:
            payload = {
                "format": "trainlab/1",
                "model": self.method.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "state": dataclasses.asdict(state),
                "rng": rngs,  # one entry per rank
                **self.checkpoint_extra(),
            }
            if self.scaler is not None:
                payload["scaler"] = self.scaler.state_dict()
            if self.ema is not None:
                payload["ema"] = self.ema.state_dict()
            save_checkpoint(path, payload)
        return path

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
            f"{state.epoch + 1}, lr {lr:.3g}); the run stopped. The last good checkpoint, if "
            f"any, is {self.run_dir / 'checkpoints' / 'last.pt'}. Usually the learning rate is "
            f"too high for this model and batch size: try a smaller optim.lr (e.g. "
            f"optim.lr={lr / 3:.2g}), a longer warmup (sched.warmup_epochs), or gradient "
            f"clipping (train.grad_clip=1.0)."
        )

    def _flags(self, bad: Tensor) -> tuple[bool, bool]:
        """(stop requested on any rank, non-finite loss on any rank) — agreed by all ranks."""
        vec = torch.stack([torch.tensor(float(self.stop.signum is not None), device=self.device),
                           bad.float()])
        all_reduce_sum(vec)
        stop, nonfinite = vec.tolist()
        return stop > 0, nonfinite > 0

    def _backward(self, loss: Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _optimizer_step(self) -> None:
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
            self.ema.update(self.method.model)

    def fit(self, state: TrainState) -> TrainState:
        """Train from `state` to the last epoch. Raises `Interrupted` on SIGINT/SIGTERM."""
        with self.stop:
            return self._fit(state)

    def _fit(self, state: TrainState) -> TrainState:
        self.method.train()
        n_batches = len(self.train_loader)
        seg_start, wall0 = time.perf_counter(), state.wall_s
        lr = self.schedule(state.step)
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        ddp = hasattr(self.train_module, "no_sync")
        while state.epoch < self.epochs:
            epoch = state.epoch
            ep_sums: dict[str, Tensor] = {}
            win_sums: dict[str, Tensor] = {}
            ep_n, win_n, win_t = 0, 0, time.perf_counter()
            ep_t0 = win_t
            self.console.start_epoch(epoch, self.epochs, n_batches, state.batch)
            for j, batch in enumerate(self.train_loader.epoch(epoch, state.batch), state.batch):
                pos = j % self.accum
                group = min(self.accum, n_batches - (j - pos))  # micro-batches in this step
                if pos == 0:
                    lr = self._set_lr(state.step)
                if self.channels_last:
                    batch = (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])
                sync = nullcontext() if not ddp or pos == group - 1 else self.train_module.no_sync()
                with sync:
                    with autocast(self.device, self.precision):
                        out = self.train_module(batch)
                    self._backward(out["loss"] / group)
                b = len(batch[1])
                for k, v in out.items():
                    v = v.detach().float() * b
                    ep_sums[k] = ep_sums.get(k, 0) + v
                    win_sums[k] = win_sums.get(k, 0) + v
                bad = bad | ~torch.isfinite(out["loss"].detach())
                ep_n, win_n = ep_n + b, win_n + b
                if pos != group - 1:
                    continue
                self._optimizer_step()
                state.step += 1
                state.batch = j + 1
                self.console.update(group)
                if state.step % self.sync_every == 0 or state.batch == n_batches:
                    stop, nonfinite = self._flags(bad)
                    if nonfinite:
                        raise self._diverged("nan or inf", state, lr)
                    if stop:
                        state.wall_s = wall0 + time.perf_counter() - seg_start
                        return self._interrupted(state)
                if state.step % self.log_every == 0:
                    self._log_window(win_sums, win_n, win_t, epoch, state.step, lr)
                    win_sums, win_n, win_t = {}, 0, time.perf_counter()
                if self.max_steps is not None and state.step >= self.max_steps:
                    self.console.end_epoch()
                    state.wall_s = wall0 + time.perf_counter() - seg_start
                    return state
            self.console.end_epoch()
            ep_seconds = time.perf_counter() - ep_t0
            state.epoch, state.batch = epoch + 1, 0
            state.wall_s = wall0 + time.perf_counter() - seg_start
            self._end_epoch(state, epoch, lr, ep_sums, ep_n, ep_seconds)
            if self._flags(bad)[0]:
                return self._interrupted(state)
        return state

    def _log_window(self, sums: dict[str, Tensor], n: int, t0: float, epoch: int, step: int,
                    lr: float) -> None:
        means, n_all = reduce_sums(sums, n, self.device)
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
                   ep_sums: dict[str, Tensor], ep_n: int, ep_seconds: float) -> None:
        means, n_all = reduce_sums(ep_sums, ep_n, self.device)
        train = {f"train_{k}": v for k, v in means.items()}
        img_per_s = n_all / max(ep_seconds, 1e-9)
        if ep_sums and not math.isfinite(train["train_loss"]):
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
        err = Interrupted(
            f"Received {name}: saved a checkpoint at optimizer step {state.step} (epoch "
            f"{state.epoch + 1}, batch {state.batch}) to {path}. Run the same command with "
            f"run.dir={self.run_dir} run.resume=auto to continue exactly where it stopped."
        )
        err.signum = int(self.stop.signum or signal.SIGTERM)
        err.exit_code = 128 + err.signum
        err.checkpoint = path
        raise err

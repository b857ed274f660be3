"""Method interface: a module wrapping a model whose `forward(batch)` returns its loss.

The trainer only ever calls `forward(batch) -> {"loss": scalar, <metric>: scalar, ...}` in
training and `evaluate(batch) -> {<metric>: scalar, ...}` in evaluation, plus the step hooks
`begin_step` / `end_step` around every optimizer step (no-ops unless a method keeps schedules of
its own); it never knows which method it runs. Metric values are batch means; the trainer
averages them weighted by batch size.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from trainlab.config.schema import Config
from trainlab.data.keys import SampleKeys
from trainlab.errors import ConfigError

# images [B, C, H, W] float, labels [B] int64 (or soft [B, K]), and from the loaders the
# samples' keys (seed, epoch, positions) for per-sample randomness; a bare (images, labels)
# pair is accepted too (then per-sample randomness falls back to torch's global RNG)
Batch = tuple[Tensor, Tensor] | tuple[Tensor, Tensor, SampleKeys]


def batch_keys(batch: Batch) -> SampleKeys | None:
    """The batch's `SampleKeys`, or None for a bare (images, labels) pair."""
    if len(batch) > 2 and isinstance(batch[2], SampleKeys):
        return batch[2]
    return None


class Method(nn.Module):
    """Base class. Subclasses set `self.model` (the module that is checkpointed)."""

    model: nn.Module

    def forward(self, batch: Batch) -> dict[str, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def evaluate(self, batch: Batch) -> dict[str, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    # Step hooks for a method's own schedules (DINO's teacher temperature and teacher EMA).
    # The trainer calls them with the 0-based optimizer step, the optimizer steps per epoch
    # and the run's total optimizer steps (its lr schedule's), so anything scheduled inside a
    # method is a pure function of the step passed in, and a resume continues it exactly.
    def begin_step(self, step: int, steps_per_epoch: int, total_steps: int) -> None:
        """Before the forward passes of optimizer step `step`. Default: nothing."""

    def end_step(self, step: int, steps_per_epoch: int, total_steps: int) -> None:
        """Right after optimizer step `step` updated the weights (before the next forward, and
        before any checkpoint). Default: nothing."""


_METHODS: dict[str, Callable[[Config, nn.Module], Method]] = {}


def register_method(name: str) -> Callable:
    def deco(factory: Callable[[Config, nn.Module], Method]) -> Callable:
        _METHODS[name] = factory
        return factory

    return deco


def method_names() -> list[str]:
    return sorted(_METHODS)


def build_method(cfg: Config, model: nn.Module) -> Method:
    """Wrap `model` in the method named by `method.name`."""
    if cfg.method.name not in _METHODS:
        raise ConfigError(
            f"Unknown method method.name={cfg.method.name!r}. Valid names: "
            f"{', '.join(method_names())}."
        )
    return _METHODS[cfg.method.name](cfg, model)

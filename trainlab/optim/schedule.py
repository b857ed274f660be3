"""Learning-rate schedules as pure functions of the optimizer step.

`Schedule(step)` returns the lr for optimizer step `step` (0-based: the lr used by the first
update is `Schedule(0)`). The trainer calls it before every optimizer step and never keeps
schedule state of its own, so resuming at step k gives exactly the lr an uninterrupted run uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainlab.config.schema import SCHEDULES, SchedConfig

NAMES = SCHEDULES  # sched.name choices, stated in the schema


@dataclass(frozen=True)
class Schedule:
    """lr(step) = base_lr * factor(step); `total_steps` and `warmup_steps` count optimizer steps."""

    name: str
    base_lr: float
    total_steps: int
    warmup_steps: int
    warmup_start_factor: float = 0.0
    min_lr_factor: float = 0.0
    milestones: tuple[int, ...] = ()  # step schedule: optimizer steps where lr *= gamma
    gamma: float = 0.1

    def factor(self, step: int) -> float:
        """Multiplier of base_lr at optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            # linear from warmup_start_factor at step 0 to 1.0 at step warmup_steps
            t = step / self.warmup_steps
            return self.warmup_start_factor + (1.0 - self.warmup_start_factor) * t
        if self.name == "constant":
            return 1.0
        if self.name == "step":
            return self.gamma ** sum(step >= m for m in self.milestones)
        # cosine from 1 at the end of warmup to min_lr_factor at the last step (total_steps - 1)
        span = max(1, self.total_steps - 1 - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_factor + (1.0 - self.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * t))

    def __call__(self, step: int) -> float:
        return self.base_lr * self.factor(step)


def build_schedule(cfg: SchedConfig, base_lr: float, steps_per_epoch: int, epochs: int) -> Schedule:
    """Turn the epoch-based config into step counts (computed here, once, and logged).

    `cfg` is validated (`trainlab.config.validate`): name, factors and milestones are in range.
    """
    total = steps_per_epoch * epochs
    warmup = min(total, round(cfg.warmup_epochs * steps_per_epoch))
    milestones = tuple(round(m * total) if m < 1 else round(m * steps_per_epoch)
                       for m in cfg.milestones)
    return Schedule(
        name=cfg.name,
        base_lr=base_lr,
        total_steps=total,
        warmup_steps=warmup,
        warmup_start_factor=cfg.warmup_start_factor,
        min_lr_factor=cfg.min_lr_factor,
        milestones=milestones,
        gamma=cfg.gamma,
    )

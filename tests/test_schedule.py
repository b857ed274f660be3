"""Schedules are pure functions of the optimizer step: check values at the points that matter."""

import math

import pytest

from trainlab.config.schema import Config, SchedConfig
from trainlab.config.validate import validate
from trainlab.errors import ConfigError
from trainlab.optim.schedule import build_schedule


def sched(**kw):
    cfg = SchedConfig(**{"name": "cosine", "warmup_epochs": 2, **kw})
    return build_schedule(cfg, base_lr=0.1, steps_per_epoch=10, epochs=10)


def test_warmup_start_end_and_cosine():
    s = sched()
    assert s.total_steps == 100 and s.warmup_steps == 20
    assert s(0) == 0.0  # warmup starts at warmup_start_factor * lr
    assert s(10) == pytest.approx(0.05)  # halfway through warmup
    assert s(20) == pytest.approx(0.1)  # end of warmup = peak
    mid = 20 + (99 - 20) / 2  # halfway through the cosine part
    assert s(int(mid)) == pytest.approx(0.05 * (1 + math.cos(math.pi * (int(mid) - 20) / 79)))
    assert s(99) == pytest.approx(0.0, abs=1e-12)  # last step reaches min lr
    lrs = [s(i) for i in range(20, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # monotone decay after warmup


def test_min_lr_and_warmup_start_factor():
    s = sched(min_lr_factor=0.1, warmup_start_factor=0.01)
    assert s(0) == pytest.approx(0.001)
    assert s(99) == pytest.approx(0.01)


def test_fractional_warmup_epochs():
    s = sched(warmup_epochs=0.5)
    assert s.warmup_steps == 5
    assert s(5) == pytest.approx(0.1)


def test_constant_and_step():
    c = sched(name="constant", warmup_epochs=0)
    assert {c(i) for i in range(100)} == {0.1}
    st = sched(name="step", warmup_epochs=0, milestones=[0.5, 8], gamma=0.1)
    assert st.milestones == (50, 80)
    assert st(49) == pytest.approx(0.1)
    assert st(50) == pytest.approx(0.01)
    assert st(80) == pytest.approx(0.001)


def test_pure_function_of_step():
    s = sched()
    assert [s(i) for i in (37, 5, 37)] == [s(37), s(5), s(37)]


def test_unknown_schedule():
    """The name is checked once, by the schema's choices (build_schedule trusts it)."""
    with pytest.raises(ConfigError, match="sched.name must be one of: cosine, constant, step"):
        validate(Config(sched=SchedConfig(name="linear")))

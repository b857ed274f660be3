"""Value checks that need more than a type: ranges and names picked from registries."""

from __future__ import annotations

from trainlab.config.schema import Config
from trainlab.errors import ConfigError


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def validate(cfg: Config) -> None:
    """Raise ConfigError with a one-paragraph message for the first invalid value."""
    from trainlab.data.sources import source_names
    from trainlab.methods import method_names
    from trainlab.models import list_models
    from trainlab.optim.factory import NAMES as OPTIMS
    from trainlab.optim.schedule import NAMES as SCHEDS

    t, d, m = cfg.train, cfg.data, cfg.model
    models = [name for name, _, _ in list_models()]
    _need(m.name in models, f"Unknown model model.name={m.name!r}. Valid names: "
          f"{', '.join(models)} (`trainlab models` lists them with sizes).")
    _need(d.name in source_names(), f"Unknown data set data.name={d.name!r}. Valid names: "
          f"{', '.join(source_names())}.")
    _need(cfg.method.name in method_names(), f"Unknown method method.name={cfg.method.name!r}. "
          f"Valid names: {', '.join(method_names())}.")
    _need(cfg.optim.name in OPTIMS, f"Unknown optimizer optim.name={cfg.optim.name!r}. "
          f"Valid names: {', '.join(OPTIMS)}.")
    _need(cfg.sched.name in SCHEDS, f"Unknown schedule sched.name={cfg.sched.name!r}. "
          f"Valid names: {', '.join(SCHEDS)}.")
    _need(t.batch_size > 0, f"train.batch_size must be a positive number of images (got "
          f"{t.batch_size}); try train.batch_size=128.")
    _need(t.eval_batch_size > 0,
          f"train.eval_batch_size must be positive (got {t.eval_batch_size}).")
    _need(t.epochs > 0, f"train.epochs must be at least 1 (got {t.epochs}).")
    _need(t.accum_steps >= 1, f"train.accum_steps must be at least 1 (got {t.accum_steps}).")
    _need(0 <= t.label_smoothing < 1, f"train.label_smoothing must be in [0, 1) (got "
          f"{t.label_smoothing}); 0.1 is a common choice.")
    _need(t.grad_clip >= 0, f"train.grad_clip must be >= 0, 0 meaning off (got {t.grad_clip}).")
    _need(0 <= d.val_fraction < 1, f"data.val_fraction must be in [0, 1) (got {d.val_fraction}).")
    _need(0 < d.test_fraction < 1, f"data.test_fraction must be in (0, 1) (got {d.test_fraction}).")
    _need(cfg.optim.lr > 0, f"optim.lr must be positive (got {cfg.optim.lr}).")
    _need(cfg.run.log_every >= 1, f"run.log_every must be at least 1 (got {cfg.run.log_every}).")
    _need(m.patch_size > 0, f"model.patch_size must be positive (got {m.patch_size}).")
    _need(0 <= m.dropout < 1, f"model.dropout must be in [0, 1) (got {m.dropout}).")
    _need(m.pool in ("cls", "mean"), f"model.pool must be cls or mean (got {m.pool!r}).")
    _need(t.precision in ("fp32", "bf16", "fp16"), f"train.precision must be fp32, bf16 or "
          f"fp16 (got {t.precision!r}).")
    _need(0 <= t.ema_decay < 1, f"train.ema_decay must be in [0, 1), 0 meaning off (got "
          f"{t.ema_decay}); 0.999 is a common choice.")
    _need(cfg.run.max_requeues >= 0, f"run.max_requeues must be 0 or more (got "
          f"{cfg.run.max_requeues}).")
    _need(cfg.run.dist_timeout_s > 0, f"run.dist_timeout_s must be positive (got "
          f"{cfg.run.dist_timeout_s}).")
    _need(cfg.sched.warmup_epochs >= 0, f"sched.warmup_epochs must be >= 0 (got "
          f"{cfg.sched.warmup_epochs}).")
    _need(cfg.sched.warmup_epochs <= t.epochs, f"sched.warmup_epochs={cfg.sched.warmup_epochs} "
          f"is longer than training (train.epochs={t.epochs}); use a shorter warmup.")

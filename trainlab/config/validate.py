"""Value checks beyond types: every key against the rule stated next to it in `schema.py`
(range, choices, pattern, list length), then the rules that tie keys together.

A leaf: it imports only the schema. Names picked from registries (model.name, data.name,
method.name) are checked by `trainlab.engine.checks.check_config`, which calls `validate` first.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from trainlab.config.rules import INT64_MAX, Rule, rule_of
from trainlab.config.schema import SECTIONS, Config
from trainlab.errors import ConfigError


def _num(v: float) -> str:
    """A bound or value as users write it: 0, 0.5, 1e-08, 2**63-1, inf."""
    if v == INT64_MAX:
        return "2**63-1"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e16):
        return str(int(v))
    short = f"{v:g}"
    return short if float(short) == v or v != v else repr(v)  # never round a value away


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _num(value)
    return str(value)


def _allowed(rule: Rule) -> str:
    """The rule in words with exact numbers, e.g. "in [0, 1]", "> 0", "one of: sgd, adam"."""
    if rule.choices is not None:
        return "one of: " + ", ".join(str(c) for c in rule.choices)
    if rule.pattern is not None:
        return rule.shown
    lo, hi = rule.lo, rule.hi
    if lo is not None and hi is not None:
        return (f"in {'(' if rule.lo_open else '['}{_num(lo)}, {_num(hi)}"
                f"{')' if rule.hi_open else ']'}")
    if lo is not None:
        return f"{'>' if rule.lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f"{'<' if rule.hi_open else '<='} {_num(hi)}"
    return "any number"


def _fail(key: str, what: str, value: Any, rule: Rule) -> ConfigError:
    hint = f"; {rule.hint}" if rule.hint else ""
    return ConfigError(f"{key} {what} (got {_show(value)}){hint}.")


def _check_number(key: str, v: Any, rule: Rule, whole: list | None = None) -> None:
    """`v` alone, or an element of the list `whole` (which the message then quotes)."""
    shown = v if whole is None else whole
    if isinstance(v, float) and not math.isfinite(v):
        raise _fail(key, f"must be a finite number {_allowed(rule)}", shown, rule)
    if not rule.admits(v):
        raise _fail(key, f"must be {_allowed(rule)}" if whole is None else
                    f"must list values {_allowed(rule)} each", shown, rule)
    if isinstance(v, int) and rule.hi is None and not -INT64_MAX - 1 <= v <= INT64_MAX:
        raise _fail(key, "must be at most 2**63-1, the largest 64-bit integer", shown, rule)


def check_value(key: str, value: Any, rule: Rule) -> None:
    """ConfigError naming `key`, `value`, what is allowed and a suggestion, unless `value`
    (already of the key's type, see `load.coerce`) follows `rule`. None is always allowed
    (the type says whether a key may be null)."""
    if value is None or rule.free:
        return
    if rule.choices is not None:
        if value not in rule.choices:
            raise _fail(key, f"must be {_allowed(rule)}", value, rule)
        return
    if rule.pattern is not None:
        if not re.fullmatch(rule.pattern, str(value)):
            raise _fail(key, f"must be {_allowed(rule)}", value, rule)
        return
    if isinstance(value, list):
        lo, hi = rule.length or (0, None)
        if len(value) < lo or (hi is not None and len(value) > hi):
            count = (f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None
                     else f"{lo} to {hi}")
            plural = "" if lo == 1 and hi in (1, None) else "s"
            raise _fail(key, f"must list {count} value{plural}", value, rule)
        for v in value:
            _check_number(key, v, rule, whole=value)
        if rule.ascending and any(a > b for a, b in zip(value, value[1:], strict=False)):
            raise _fail(key, "must be in ascending order", value, rule)
        return
    _check_number(key, value, rule)


def check_keys(body: Any, section: str, *names: str) -> None:
    """Check some keys of one section object against their schema rules, e.g.
    `check_keys(data_cfg, "data", "val_fraction")` where a DataConfig arrives without a full
    Config (`load_data` called directly)."""
    for name in names:
        check_value(f"{section}.{name}", getattr(body, name), rule_of(SECTIONS[section], name))


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _cross_checks(cfg: Config) -> None:
    """Rules between keys (each key alone is already valid)."""
    d, m, o, s, t = cfg.data, cfg.model, cfg.optim, cfg.sched, cfg.train
    _need(s.warmup_epochs <= t.epochs, f"sched.warmup_epochs={_num(s.warmup_epochs)} is longer "
          f"than training (train.epochs={t.epochs}); use a shorter warmup.")
    late = [v for v in s.milestones if v >= 1 and v >= t.epochs]
    _need(not late, f"sched.milestones={_show(s.milestones)}: the epoch milestones "
          f"{_show(late)} are not below train.epochs={t.epochs}, so they would never apply; "
          f"use epochs below {t.epochs} or fractions of training (< 1) such as [0.5, 0.75].")
    _need(not o.nesterov or o.name == "sgd", f"optim.nesterov=true applies to optim.name=sgd "
          f"only (got optim.name={o.name}); set optim.name=sgd, or optim.nesterov=false.")
    _need(not o.nesterov or o.momentum > 0, f"optim.nesterov=true needs optim.momentum > 0 (got "
          f"{_num(o.momentum)}); set optim.momentum=0.9, or optim.nesterov=false.")
    mm = cfg.method
    _need(mm.warmup_teacher_temp_epochs <= t.epochs, f"method.warmup_teacher_temp_epochs="
          f"{_num(mm.warmup_teacher_temp_epochs)} is longer than training (train.epochs="
          f"{t.epochs}); use a shorter teacher temperature warmup.")
    _need(mm.decoder_dim % mm.decoder_heads == 0, f"method.decoder_heads={mm.decoder_heads} "
          f"must divide method.decoder_dim={mm.decoder_dim}; e.g. decoder_dim=128 with "
          f"decoder_heads=4.")
    _need(m.dim is None or m.heads is None or m.dim % m.heads == 0, f"model.heads={m.heads} "
          f"must divide model.dim={m.dim}; e.g. model.dim=192 with model.heads=3.")
    _need(not d.coarse_labels or d.name == "cifar100", f"data.coarse_labels=true only applies "
          f"to data.name=cifar100 (got data.name={d.name}); set data.coarse_labels=false.")


def validate(cfg: Config) -> None:
    """Raise ConfigError with a one-paragraph message for the first invalid value: every key
    against its schema rule, in schema order, then the rules between keys."""
    for section, cls in SECTIONS.items():
        body = getattr(cfg, section)
        for f in dataclasses.fields(cls):
            check_value(f"{section}.{f.name}", getattr(body, f.name), f.metadata["rule"])
    _cross_checks(cfg)

"""How a config key's allowed values are stated next to it in `schema.py`.

Each schema field carries one `Rule` in its dataclass metadata (`key(default, rule)`):
a numeric range (`rng`), a fixed list of choices (`choices`), a pattern (`pattern`), or
`free(reason)` for keys with no invalid value (paths, switches). `trainlab.config.validate`
reads the rules; nothing else restates them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

INT64_MAX = 2**63 - 1  # the largest seed (and int) torch and numpy take


@dataclass(frozen=True)
class Rule:
    """Allowed values of one key. For list keys the range applies to every element."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None  # regex the whole string must match
    shown: str = ""  # the pattern as users read it, e.g. "auto, cpu, cuda, cuda:N or mps"
    length: tuple[int, int | None] | None = None  # list keys: (min, max) elements, None = any
    ascending: bool = False  # list keys: elements in non-decreasing order
    hint: str = ""  # the suggestion ending the error message
    free: str = ""  # why this key has no invalid value (no check)

    def admits(self, v: float) -> bool:
        """True if the number `v` is inside the range (nan is never inside)."""
        if v != v:
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))


def rng(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
        hi_open: bool = False, length: tuple[int, int | None] | None = None,
        ascending: bool = False, hint: str = "") -> Rule:
    """A numeric range, closed unless `lo_open` / `hi_open`; None = unbounded on that side."""
    return Rule(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, length=length,
                ascending=ascending, hint=hint)


def choices(*values: Any, hint: str = "") -> Rule:
    """A fixed list of allowed values."""
    return Rule(choices=tuple(values), hint=hint)


def pattern(regex: str, shown: str, hint: str = "") -> Rule:
    """A string that must match `regex` entirely; `shown` says so in words."""
    return Rule(pattern=regex, shown=shown, hint=hint)


def free(reason: str) -> Rule:
    """No invalid value: `reason` says why (a path, a switch...)."""
    return Rule(free=reason)


def key(default: Any, rule: Rule) -> Any:
    """A dataclass field with `default` (lists are copied per instance) and its `rule`."""
    meta = {"rule": rule}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def rule_of(cls: type, name: str) -> Rule:
    """The rule stated for field `name` of the schema dataclass `cls`."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata["rule"]
    raise KeyError(f"{cls.__name__} has no field {name!r}")

"""Sweep points that start from other points' weights (pretrain, then probe or fine-tune).

In a sweep recipe's `points:` list, a point may set `model.init: point:I`: the encoder of the
recipe's point I (0-based, an earlier entry of the same list), trained in the same sweep. With
a grid, random samples or seeds, each combination starts from point I's run with the same grid
values and seed. The sweep then trains point I first: `--local` in order (and `--parallel`
waits for it), Slurm as separate array jobs with `--dependency=afterok` on the job that trains
point I (`--kill-on-invalid-dep=yes`, so a failed pretraining cancels the points built on it
instead of leaving them pending). A run folder given to model.init must have finished
(`engine.pretrained.resolve_checkpoint(finished=True)`), so a point can never start from a
half-trained one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from trainlab.errors import ConfigError

KEY = "model.init"
_REF = re.compile(r"point:(\d+)")


def is_ref(value: Any) -> bool:
    """True for a `point:...` value (well formed or not)."""
    return isinstance(value, str) and value.strip().startswith("point:")


def refuse_outside_points(value: Any) -> None:
    """ConfigError: a `point:I` model.init given where no recipe point can hold it."""
    raise ConfigError(
        f"{KEY}={value} names a sweep point, which only works inside a sweep recipe's points "
        f"list (e.g. 'points: [{{method.name: mae, {KEY}: null}}, {{method.name: linear_probe, "
        f"{KEY}: point:0}}]'), not in --grid or a key=value override.")


def resolve(tagged: Sequence[tuple[int | None, dict[str, Any]]],
            recipe_points: Sequence[dict[str, Any]]) -> list[list[int]]:
    """For each expanded point (origin = index in the recipe's points list, or None; raw
    {key: value}), the indices of the expanded points it needs (its model.init's point)."""
    needs: list[list[int]] = []
    for i, (origin, raw) in enumerate(tagged):
        value = raw.get(KEY)
        if not is_ref(value):
            needs.append([])
            continue
        if origin is None or KEY not in recipe_points[origin]:
            refuse_outside_points(value)
        m = _REF.fullmatch(value.strip())
        target = int(m.group(1)) if m else -1
        if not 0 <= target < origin:
            raise ConfigError(
                f"Sweep recipe point {origin} sets {KEY}: {value}; it must name an earlier entry "
                f"of the points list, point:0 to point:{origin - 1} (0-based), whose run it "
                f"starts from." if origin else
                f"Sweep recipe point 0 sets {KEY}: {value}; the first point has no earlier "
                f"point to start from. Order the points so the pretraining comes first.")
        rest = {k: v for k, v in raw.items() if k not in recipe_points[origin]}
        match = [j for j, (o, r) in enumerate(tagged[:i])
                 if o == target and all(r.get(k) == v for k, v in rest.items())]
        if not match:  # the grid/seed keys are the same for every recipe point
            raise ConfigError(f"Sweep point {i}: no run of recipe point {target} with "
                              f"{rest} to start from.")
        needs.append([match[0]])
    return needs


def waves(needs: Sequence[Sequence[int]]) -> list[int]:
    """0 for a point that needs none, else 1 + the deepest wave it needs (needs are earlier)."""
    out: list[int] = []
    for n in needs:
        out.append(1 + max(out[j] for j in n) if n else 0)
    return out


def parts(needs: Sequence[Sequence[int]], max_size: int) -> list[tuple[int, int, list[int]]]:
    """Contiguous ranges (first, last, parts they wait for) of positions 0..len-1 to submit as
    array jobs: a new range starts where the wave changes or at `max_size` points. `needs` holds
    positions in the same list (needs outside it are already satisfied and left out)."""
    w = waves(needs)
    size = max(1, max_size)
    out: list[tuple[int, int, list[int]]] = []
    start = 0
    for k in range(1, len(needs) + 1):
        if k == len(needs) or w[k] != w[start] or k - start == size:
            out.append((start, k - 1, []))
            start = k
    where = {k: q for q, (a, b, _) in enumerate(out) for k in range(a, b + 1)}
    for q, (a, b, after) in enumerate(out):
        after.extend(sorted({where[j] for k in range(a, b + 1) for j in needs[k]} - {q}))
    return out

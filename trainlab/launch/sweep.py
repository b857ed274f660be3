"""`trainlab sweep`: many runs of one recipe, one run folder per point, one Slurm array job.

Points are the product of the --grid values, times --random samples of the --range keys,
times --seeds. Every point is a full config, validated before anything is submitted. The
sweep folder holds `sweep.json` (the manifest: recipe, overrides, varied keys, points, job
ids), `sweep.sbatch` and `logs/`; each point folder holds `job.yaml` and then the usual run
files. `--local` trains the points here one after another (finished points are skipped when
the same command runs again; `launch.local`, also `--parallel N` at once).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from trainlab.config.load import (
    RecipeSweep,
    _closest,
    _field_types,
    all_keys,
    build_config,
    coerce,
    dump_yaml,
    parse_override,
)
from trainlab.config.schema import SECTIONS, Config
from trainlab.errors import ConfigError
from trainlab.files import atomic_write_json, atomic_write_text, recipe_name, timestamped_dir
from trainlab.launch import chain, slurm
from trainlab.launch.compare import FORMAT, MANIFEST
from trainlab.launch.script import SlurmOptions, array_run_lines, render_script
from trainlab.launch.submit import JOB_CONFIG, job_config, record_failure, record_submission

SCRIPT = "sweep.sbatch"


@dataclass
class Point:
    index: int
    dir: str  # relative to the sweep folder
    overrides: dict[str, Any]  # varied key -> typed value
    needs: list[int] = field(default_factory=list)  # points it starts from (launch.chain)


@dataclass
class SweepSpec:
    grid: dict[str, list[Any]] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float, str]] = field(default_factory=dict)  # lo, hi, scale
    random: int = 0
    seeds: int = 1
    sweep_seed: int = 0
    points: list[dict[str, Any]] = field(default_factory=list)  # explicit settings x the grid


def _split_values(text: str) -> list[str]:
    """'1e-3,3e-3' -> ['1e-3', '3e-3']; commas inside [...] stay: '[1,2],[3]' -> 2 values."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out if v.strip()]


def _key(key: str, flag: str) -> str:
    key = key.strip()
    if key not in all_keys():
        raise ConfigError(f"{flag} names '{key}', which is not a config key."
                          f"{_closest(key, all_keys())} Sweep keys are the same keys as "
                          f"overrides (`trainlab config show` lists them).")
    return key


def parse_spec(grid: list[str], ranges: list[str], n_random: int, seeds: int,
               sweep_seed: int = 0) -> SweepSpec:
    """Parse --grid key=v1,v2 / --range key=lo:hi[:log|:int] into a SweepSpec."""
    spec = SweepSpec(random=n_random, seeds=seeds, sweep_seed=sweep_seed)
    for g in grid:
        if "=" not in g:
            raise ConfigError(f"--grid '{g}' must look like key=v1,v2,... e.g. "
                              f"--grid optim.lr=1e-3,3e-3.")
        key, text = g.split("=", 1)
        key = _key(key, "--grid")
        section, name = key.split(".")
        tp = _field_types(SECTIONS[section])[name]
        values = [coerce(parse_override(f"{key}={v}")[1], tp, key, "--grid")
                  for v in _split_values(text)]
        if not values:
            raise ConfigError(f"--grid {key}= has no values; give them comma-separated.")
        spec.grid[key] = values
    for r in ranges:
        m = re.fullmatch(r"([^=]+)=([^:]+):([^:]+)(?::(log|lin|int))?", r.strip())
        if not m:
            raise ConfigError(f"--range '{r}' must look like key=low:high[:log|:lin|:int], "
                              f"e.g. --range optim.lr=1e-5:1e-2:log.")
        key = _key(m.group(1), "--range")
        try:
            lo, hi = float(m.group(2)), float(m.group(3))
        except ValueError:
            raise ConfigError(f"--range {r}: low and high must be numbers.") from None
        scale = m.group(4) or "lin"
        if not lo < hi or (scale == "log" and lo <= 0):
            raise ConfigError(f"--range {r}: need low < high (and low > 0 for :log).")
        spec.ranges[key] = (lo, hi, scale)
    overlap = set(spec.grid) & set(spec.ranges)
    if overlap:
        raise ConfigError(f"{', '.join(sorted(overlap))} is given to both --grid and --range; "
                          f"sweep each key one way.")
    if spec.ranges and spec.random < 1:
        raise ConfigError("--range needs --random N (how many points to sample).")
    if spec.random and not spec.ranges:
        raise ConfigError("--random N needs at least one --range key=low:high[:log].")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1 (got {seeds}).")
    if seeds > 1 and "run.seed" in {*spec.grid, *spec.ranges}:
        raise ConfigError("--seeds and a run.seed grid/range both set seeds; use one.")
    if not spec.grid and not spec.random and seeds == 1:
        raise ConfigError("Nothing to sweep: give --grid key=v1,v2, --random N with --range, "
                          "or --seeds K.")
    return spec


def spec_with_recipe(recipe_sweep: RecipeSweep | None, overrides: list[str], grid: list[str],
                     ranges: list[str], n_random: int, seeds: int | None,
                     sweep_seed: int = 0) -> SweepSpec:
    """The sweep of a recipe's `sweep:` section (config.load.read_sweep) merged with the
    command-line flags: --grid values replace the recipe's for the same key and add new keys,
    --range/--random add samples, --seeds (when given) replaces the recipe's seeds. A recipe
    grid key also set by a `key=value` override is refused (which one should win?)."""
    if recipe_sweep is None:
        return parse_spec(grid, ranges, n_random, 1 if seeds is None else seeds, sweep_seed)
    fixed = {parse_override(o)[0] for o in overrides}
    swept = set(recipe_sweep.grid) | set(recipe_sweep.points[0] if recipe_sweep.points else {})
    both = sorted(swept & fixed - {g.split("=", 1)[0].strip() for g in grid})
    if both:
        raise ConfigError(
            f"{both[0]} is swept by the recipe's sweep section and also set by the override "
            f"{both[0]}=...; drop the override, or replace the recipe's values with --grid "
            f"{both[0]}=V1,V2.")
    flags = (parse_spec(grid, ranges, n_random, 1, sweep_seed) if grid or ranges or n_random
             else SweepSpec(sweep_seed=sweep_seed))
    merged = {**recipe_sweep.grid, **flags.grid}
    point_keys = set(recipe_sweep.points[0]) if recipe_sweep.points else set()
    clash = sorted((set(merged) | point_keys) & set(flags.ranges) | point_keys & set(flags.grid))
    if clash:
        raise ConfigError(f"{clash[0]} is in the recipe's sweep section and given to "
                          f"--grid/--range; sweep each key one way.")
    n_seeds = recipe_sweep.seeds if seeds is None else seeds
    if n_seeds < 1:
        raise ConfigError(f"--seeds must be at least 1 (got {n_seeds}).")
    if n_seeds > 1 and "run.seed" in {*merged, *flags.ranges, *point_keys}:
        raise ConfigError("--seeds (or the recipe's sweep.seeds) and a run.seed grid/range "
                          "both set seeds; use one.")
    return SweepSpec(grid=merged, ranges=flags.ranges, random=flags.random, seeds=n_seeds,
                     sweep_seed=sweep_seed, points=list(recipe_sweep.points))


def _sig(x: float) -> float:
    return float(f"{x:.3g}")


def expand(spec: SweepSpec, base_seed: int) -> list[dict[str, Any]]:
    """Every point as {key: raw value}: grid product x random samples x seeds."""
    return [c for _, c in _tagged(spec, base_seed)]


def _tagged(spec: SweepSpec, base_seed: int) -> list[tuple[int | None, dict[str, Any]]]:
    """`expand`, each point with its origin: its index in the recipe's points (or None)."""
    grid = [dict(zip(spec.grid, vals, strict=True))
            for vals in itertools.product(*spec.grid.values())]
    combos: list[tuple[int | None, dict[str, Any]]] = [(None, c) for c in grid]
    if spec.points:  # a recipe's explicit points, each combined with every grid combination
        combos = [(i, {**p, **c}) for i, p in enumerate(spec.points) for c in grid]
    if spec.random:
        rng = random.Random(spec.sweep_seed)
        samples = []
        for _ in range(spec.random):
            s: dict[str, Any] = {}
            for key, (lo, hi, scale) in spec.ranges.items():
                if scale == "log":
                    s[key] = _sig(10 ** rng.uniform(math.log10(lo), math.log10(hi)))
                elif scale == "int":
                    s[key] = rng.randint(math.ceil(lo), math.floor(hi))
                else:
                    s[key] = _sig(rng.uniform(lo, hi))
            samples.append(s)
        combos = [(o, {**c, **s}) for o, c in combos for s in samples]
    if spec.seeds > 1:
        combos = [(o, {**c, "run.seed": base_seed + i}) for o, c in combos
                  for i in range(spec.seeds)]
    return combos


def _fmt(v: Any) -> str:
    text = "-".join(map(str, v)) if isinstance(v, list) else (f"{v:g}" if isinstance(v, float)
                                                               else str(v))
    return re.sub(r"[^A-Za-z0-9.+=-]", "-", text)


def point_dir(index: int, values: dict[str, Any]) -> str:
    """'003_optim.lr=0.001_run.seed=1' (index first, so folders sort in sweep order)."""
    name = "_".join(f"{k}={_fmt(v)}" for k, v in values.items())
    return f"{index:03d}_{name}"[:120]


def _override(key: str, value: Any) -> str:
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def plan(recipe: str | None, overrides: list[str], spec: SweepSpec,
         sweep_dir: Path) -> tuple[list[Point], list[Config]]:
    """Points and their validated configs (run.dir = the point folder). Nothing is written.
    A point whose model.init names another point (`point:I`, launch.chain) gets that point's
    folder as model.init and lists it in `needs`."""
    base = build_config(recipe, overrides)
    if chain.is_ref(base.model.init):
        chain.refuse_outside_points(base.model.init)
    tagged = _tagged(spec, base.run.seed)
    needs = chain.resolve(tagged, spec.points)
    points: list[Point] = []
    configs: list[Config] = []
    for i, (_, raw) in enumerate(tagged):
        extra = [_override(k, v) for k, v in raw.items()]
        if needs[i]:
            extra.append(_override(chain.KEY, str(sweep_dir.absolute() / points[needs[i][0]].dir)))
        cfg = build_config(recipe, [*overrides, *extra])
        typed = {k: getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1]) for k in raw}
        if needs[i]:
            typed[chain.KEY] = raw[chain.KEY]  # shown as point:I (the folder is in job.yaml)
        p = Point(i, point_dir(i, typed), typed, needs[i])
        try:
            configs.append(job_config(cfg, sweep_dir / p.dir))
        except ConfigError as e:
            raise ConfigError(f"Sweep point {i} ({', '.join(extra)}): {e}") from None
        points.append(p)
    return points, configs


def default_dir(recipe: str | None) -> Path:
    return timestamped_dir("sweeps", recipe_name(recipe))


def write_sweep(sweep_dir: Path, recipe: str | None, overrides: list[str], spec: SweepSpec,
                points: list[Point], configs: list[Config], local: bool) -> None:
    """Point folders with job.yaml, and the manifest."""
    varied = list(points[0].overrides) if points else []
    manifest = {
        "format": FORMAT,
        "recipe": str(Path(recipe).absolute()) if recipe else None,
        "recipe_name": Path(recipe).stem if recipe else "default",
        "overrides": list(overrides), "varied": varied,
        "created": datetime.now().isoformat(timespec="seconds"),
        "points": [{"index": p.index, "dir": p.dir, "overrides": p.overrides,
                    **({"needs": p.needs} if p.needs else {})} for p in points],
        "jobs": [], "local": local,
    }
    for p, cfg in zip(points, configs, strict=False):
        (sweep_dir / p.dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(sweep_dir / p.dir / JOB_CONFIG, dump_yaml(cfg))
    atomic_write_json(sweep_dir / MANIFEST, manifest)


def submission_parts(points: list[Point], max_array_size: int) -> list[tuple[int, int, list[int]]]:
    """Position ranges [(first, last, earlier parts it waits for), ...] to submit as one array
    job each: at most `max_array_size` points (array indices must stay below MaxArraySize, so
    each part is submitted as 0..len-1 + offset), and points that start from other points
    (`needs`) in later parts than those (launch.chain)."""
    pos = {p.index: k for k, p in enumerate(points)}
    return chain.parts([[pos[j] for j in p.needs if j in pos] for p in points], max_array_size)


def array_spec(n: int, max_parallel: int | None) -> str:
    return f"0-{n - 1}" + (f"%{max_parallel}" if max_parallel else "")


def submit_sweep(sweep_dir: Path, points: list[Point], opts: SlurmOptions, name: str,
                 max_parallel: int | None, dry_run: bool, script_name: str = SCRIPT,
                 subset: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """Render the array script; unless `dry_run`, sbatch it (split when the cluster's
    MaxArraySize is smaller than the sweep; the parts then run one after another when
    --max-parallel is set). Returns (script text, [{job_id, first, last}]). `subset`: the
    points are some of the sweep's (a resubmission): each job then records the point indices
    its array tasks 0, 1, ... train (`points`) instead of first/last."""
    sweep_dir = sweep_dir.absolute()
    dirs = [sweep_dir / p.dir for p in points]
    script = render_script(opts, name=f"trainlab-sweep-{name}", log=str(sweep_dir / "logs" /
                           "%A_%a"), select_run=array_run_lines(dirs), run_config=JOB_CONFIG,
                           what=f"trainlab sweep {sweep_dir}: {len(points)} points",
                           array=array_spec(len(points), max_parallel))
    if dry_run:
        return script, []
    script_path = sweep_dir / script_name
    (sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
    atomic_write_text(script_path, script)
    os.chmod(script_path, 0o755)
    parts = submission_parts(points, slurm.max_array_size())
    jobs: list[dict[str, Any]] = []
    prev = None
    for first, last, after in parts:
        args, deps = [], []
        if len(parts) > 1:
            args = [f"--array={array_spec(last - first + 1, max_parallel)}",
                    f"--export=ALL,TRAINLAB_ARRAY_OFFSET={first}"]
            if max_parallel and prev:
                deps.append(f"afterany:{prev}")
        waits_for = [jobs[q]["job_id"] for q in after]
        if waits_for:  # points that start from points of earlier parts: once those succeeded
            deps.append("afterok:" + ":".join(waits_for))
            args.append("--kill-on-invalid-dep=yes")
        if deps:
            args.append("--dependency=" + ",".join(deps))
        where = ({"points": [p.index for p in points[first:last + 1]]} if subset else
                 {"first": first, "last": last})
        try:
            job = slurm.sbatch(str(script_path), args,  # (its hint says nothing was submitted)
                               script_path="" if jobs else str(script_path))
        except slurm.SlurmError as e:
            if subset:  # the earlier submissions of these points still describe them
                raise
            record_failure(sweep_dir / MANIFEST, str(e), where)
            raise slurm.SlurmError(f"{e}{_failure_note(sweep_dir, jobs, first, last)}") from None
        record_submission(sweep_dir / MANIFEST, job, script_path, where)
        jobs.append({"job_id": job, "first": first, "last": last, **where,
                     **({"after": ", ".join(waits_for)} if waits_for else {})})
        prev = job
    return script, jobs


def _failure_note(sweep_dir: Path, jobs: list[dict[str, Any]], first: int, last: int) -> str:
    """What the user can do after sbatch refused points first..last (sweep.json records it)."""
    if not jobs:
        return (f" The sweep folder {sweep_dir} is kept (`trainlab status` shows its points "
                f"as submit-failed); fix the options and run the same command again to submit "
                f"it.")
    n = last - first + 1
    return (f" Points {jobs[0]['first']}-{jobs[-1]['last']} were submitted (job"
            f"{'s' if len(jobs) > 1 else ''} {', '.join(j['job_id'] for j in jobs)}); points "
            f"{first}-{last} were not. Submit them with `sbatch --array={array_spec(n, None)} "
            f"--export=ALL,TRAINLAB_ARRAY_OFFSET={first} {sweep_dir / SCRIPT}` once the "
            f"problem is fixed.")

"""What `trainlab submit`, `sweep` and `status` do, given parsed arguments (argv is read in
`trainlab.cli`; compare and lr-find live beside this module)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from trainlab.config.load import read_sweep
from trainlab.errors import ConfigError
from trainlab.files import recipe_name
from trainlab.launch import slurm
from trainlab.launch import sweep as sw
from trainlab.launch.compare import MANIFEST, compare_command, read_manifest
from trainlab.launch.local import run_local
from trainlab.launch.script import SlurmOptions
from trainlab.launch.status import format_rows, status_rows
from trainlab.launch.submit import JOB_CONFIG, submit_run


def _check_max_parallel(max_parallel: int | None) -> None:
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError(f"--max-parallel must be at least 1 (got {max_parallel}); leave it "
                          f"out to let Slurm run as many array tasks at once as it can.")


@dataclass(frozen=True)
class SweepArgs:
    """The flags of `trainlab sweep` (see its --help)."""

    grid: list[str] = field(default_factory=list)  # KEY=V1,V2,...
    range: list[str] = field(default_factory=list)  # KEY=LOW:HIGH[:log|:lin|:int]
    random: int = 0  # points sampled from the ranges
    seeds: int | None = None  # None: the recipe's sweep.seeds, else 1
    sweep_seed: int = 0
    max_parallel: int | None = None
    dir: str | None = None
    local: bool = False
    parallel: int = 1  # with local: points trained at once
    dry_run: bool = False


def submit_command(recipe: str | None, overrides: list[str], opts: SlurmOptions,
                   dry_run: bool) -> None:
    """`trainlab submit`: render, save and sbatch one run's batch script (or print it)."""
    out = submit_run(recipe, overrides, opts, dry_run)
    if dry_run:
        print(out["script"], end="")
        print(f"# dry run: nothing written or submitted (the script would be "
              f"{out['script_path']})", file=sys.stderr)
        return
    print(f"submitted job {out['job_id']}: run {out['run_dir']}\n  script {out['script_path']}"
          f"\n  logs   {out['run_dir']}/slurm-{out['job_id']}.out\n  watch  trainlab status "
          f"{out['run_dir']}")


def sweep_command(recipe: str | None, overrides: list[str], a: SweepArgs,
                  opts: SlurmOptions | None) -> int:
    """`trainlab sweep`: plan the points (the recipe's `sweep:` grid merged with the flags),
    then run them here (`a.local`) or submit them as
    one array job; `opts` are the Slurm options (None with --local). Returns the exit code
    (1 when a local point failed)."""
    spec = sw.spec_with_recipe(read_sweep(recipe) if recipe else None, overrides, a.grid or [],
                               a.range or [], a.random or 0, a.seeds, a.sweep_seed)
    _check_max_parallel(a.max_parallel)
    if a.parallel < 1:
        raise ConfigError(f"--parallel must be at least 1 (got {a.parallel}).")
    if a.parallel > 1 and not a.local:
        raise ConfigError("--parallel N trains N points at once on this machine and needs "
                          "--local; for a Slurm array use --max-parallel N (array tasks running "
                          "at once).")
    sweep_dir = Path(a.dir) if a.dir else sw.default_dir(recipe)
    sweep_dir = sweep_dir.absolute()
    points, configs = sw.plan(recipe, overrides, spec, sweep_dir)
    if (sweep_dir / MANIFEST).is_file():
        man = read_manifest(sweep_dir)
        old = [p["dir"] for p in man["points"]]
        unsubmitted = not a.local and not man.get("local") and not man.get("jobs")
        if old != [p.dir for p in points] or not (a.local or unsubmitted):
            raise ConfigError(
                f"{sweep_dir} already holds a sweep. Pick a new --dir, or see it with "
                f"`trainlab status {sweep_dir}` / `trainlab compare {sweep_dir}`. (Rerunning the "
                f"same --local sweep continues it; the same sweep whose submission failed can "
                f"be submitted again.)")
    print(f"sweep {sweep_dir}: {len(points)} points over "
          f"{', '.join(points[0].overrides) if points else '-'}")
    name = recipe_name(recipe)
    if a.dry_run:
        if opts is None:
            raise ConfigError("--dry-run prints the Slurm script; it has no meaning with "
                              "--local.")
        script, _ = sw.submit_sweep(sweep_dir, points, opts, name, a.max_parallel,
                                    dry_run=True)
        print(script, end="")
        for p in points:
            after = (f" (starts from point {', '.join(map(str, p.needs))}: submitted as a later "
                     f"array job with --dependency=afterok)" if p.needs else "")
            print(f"# point {p.index}: {p.dir}{after}", file=sys.stderr)
        return 0
    if a.local:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        sw.write_sweep(sweep_dir, recipe, overrides, spec, points, configs, local=True)
        status = run_local(sweep_dir, points, configs, a.parallel)
        compare_command(sweep_dir)
        return 0 if all(s == "done" for s in status) else 1
    assert opts is not None
    slurm.require("sbatch", "submitting the sweep")
    sw.write_sweep(sweep_dir, recipe, overrides, spec, points, configs, local=False)
    _, jobs = sw.submit_sweep(sweep_dir, points, opts, name, a.max_parallel, dry_run=False)
    ids = ", ".join(f"{j['job_id']} (points {j['first']}-{j['last']}"
                    f"{', after ' + j['after'] if j.get('after') else ''})" for j in jobs)
    print(f"submitted array job{'s' if len(jobs) > 1 else ''} {ids}\n  watch   trainlab "
          f"status {sweep_dir}\n  results trainlab compare {sweep_dir}")
    return 0


def status_command(path: Path) -> None:
    """`trainlab status`: Slurm state and progress of the runs under `path`."""
    print(format_rows(status_rows(path)))


RESUBMIT_SCRIPT = "resubmit.sbatch"


def resubmit_command(sweep_dir: Path, opts: SlurmOptions, max_parallel: int | None,
                     dry_run: bool) -> int:
    """`trainlab sweep --resubmit DIR`: submit the points of an existing (Slurm) sweep that are
    neither done nor queued/running, as ONE array job over just those points; they continue
    from their checkpoints (run.resume=auto)."""
    _check_max_parallel(max_parallel)
    sweep_dir = sweep_dir.absolute()
    man = read_manifest(sweep_dir)
    if man.get("local"):
        raise ConfigError(f"{sweep_dir} was run with --local: run the same `trainlab sweep "
                          f"... --local` command again to continue it.")
    rows = status_rows(sweep_dir)
    todo = [sw.Point(p["index"], p["dir"], p.get("overrides", {}), p.get("needs", []))
            for p, r in zip(man["points"], rows, strict=True)
            if r["state"] not in ("done", "running", "pending")]
    if not todo:
        print(f"{sweep_dir}: nothing to resubmit (every point is done, running or pending)")
        return 0
    gone = [p.dir for p in todo if not (sweep_dir / p.dir / JOB_CONFIG).is_file()]
    if gone:
        shown = ", ".join(gone[:5]) + (" ..." if len(gone) > 5 else "")
        raise ConfigError(
            f"Cannot resubmit {sweep_dir}: {len(gone)} point folder(s) lack {JOB_CONFIG} "
            f"(deleted or moved?): {shown}; their array tasks could not train. Restore them, "
            f"or run the sweep again with a new --dir.")
    print(f"sweep {sweep_dir}: resubmitting {len(todo)} of {len(rows)} points: "
          f"{', '.join(str(p.index) for p in todo)}")
    if not dry_run:
        slurm.require("sbatch", "resubmitting the sweep")
    script, jobs = sw.submit_sweep(sweep_dir, todo, opts, str(man.get("recipe_name") or "sweep"),
                                   max_parallel, dry_run, script_name=RESUBMIT_SCRIPT,
                                   subset=True)
    if dry_run:
        print(script, end="")
        return 0
    ids = ", ".join(f"{j['job_id']} (points {', '.join(map(str, j['points']))})" for j in jobs)
    print(f"submitted array job{'s' if len(jobs) > 1 else ''} {ids}\n  watch   trainlab status "
          f"{sweep_dir}")
    return 0

"""CLI subcommands for clusters: submit, sweep, status (compare and lr-find live beside them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainlab.errors import ConfigError

OVERRIDES_HELP = "RECIPE.yaml then key=value overrides, exactly as for `trainlab train`"


def _add_slurm_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Slurm resources (defaults: ~/.config/trainlab/slurm.yaml, "
                             "then the cluster's)")
    g.add_argument("--partition", "-p")
    g.add_argument("--nodes", "-N", type=int)
    g.add_argument("--gpus-per-node", "-G", type=int, help="one task per GPU (0: CPU job)")
    g.add_argument("--cpus-per-task", "-c", type=int)
    g.add_argument("--mem", help="memory per node, e.g. 32G")
    g.add_argument("--time", "-t", help="time limit, e.g. 4:00:00 or 1-00:00:00")
    g.add_argument("--account", "-A")
    g.add_argument("--qos", "-q")
    g.add_argument("--constraint", "-C")
    g.add_argument("--job-name", "-J")
    g.add_argument("--signal-grace", type=int, dest="signal_grace_s", metavar="SECONDS",
                   help="USR1 this long before the time limit (default 120): checkpoint + "
                   "requeue")
    g.add_argument("--sbatch", action="append", metavar="LINE",
                   help="extra #SBATCH line, e.g. --sbatch=--exclusive (repeatable)")
    g.add_argument("--setup", action="append", metavar="LINE",
                   help="shell line before training, e.g. 'module load cuda' (repeatable)")
    g.add_argument("--python", help="python on the compute nodes (default: this one)")
    g.add_argument("--dry-run", action="store_true",
                   help="print the batch script; write and submit nothing")


def _options(ns: argparse.Namespace):
    from trainlab.launch.script import FIELDS, resolve_options

    return resolve_options({k: getattr(ns, k, None) for k in FIELDS})


def _recipe_and_overrides(args: list[str]) -> tuple[str | None, list[str]]:
    from trainlab.cli import _split_recipe

    return _split_recipe(args)


def cmd_submit(ns: argparse.Namespace) -> int:
    from trainlab.launch.submit import submit_run

    recipe, overrides = _recipe_and_overrides(ns.args)
    out = submit_run(recipe, overrides, _options(ns), ns.dry_run)
    if ns.dry_run:
        print(out["script"], end="")
        print(f"# dry run: nothing written or submitted (the script would be "
              f"{out['script_path']})", file=sys.stderr)
        return 0
    print(f"submitted job {out['job_id']}: run {out['run_dir']}\n  script {out['script_path']}"
          f"\n  logs   {out['run_dir']}/slurm-{out['job_id']}.out\n  watch  trainlab status "
          f"{out['run_dir']}")
    return 0


def cmd_sweep(ns: argparse.Namespace) -> int:
    from trainlab.launch import sweep as sw
    from trainlab.launch.compare import MANIFEST, read_manifest

    recipe, overrides = _recipe_and_overrides(ns.args)
    spec = sw.parse_spec(ns.grid or [], ns.range or [], ns.random or 0, ns.seeds,
                         ns.sweep_seed)
    if ns.max_parallel is not None and ns.max_parallel < 1:
        raise ConfigError(f"--max-parallel must be at least 1 (got {ns.max_parallel}).")
    sweep_dir = Path(ns.dir) if ns.dir else sw.default_dir(recipe)
    sweep_dir = sweep_dir.absolute()
    points, configs = sw.plan(recipe, overrides, spec, sweep_dir)
    if (sweep_dir / MANIFEST).is_file():
        man = read_manifest(sweep_dir)
        old = [p["dir"] for p in man["points"]]
        unsubmitted = not ns.local and not man.get("local") and not man.get("jobs")
        if old != [p.dir for p in points] or not (ns.local or unsubmitted):
            raise ConfigError(
                f"{sweep_dir} already holds a sweep. Pick a new --dir, or see it with "
                f"`trainlab status {sweep_dir}` / `trainlab compare {sweep_dir}`. (Rerunning the "
                f"same --local sweep continues it; the same sweep whose submission failed can "
                f"be submitted again.)")
    print(f"sweep {sweep_dir}: {len(points)} points over "
          f"{', '.join(points[0].overrides) if points else '-'}")
    opts = None if ns.local else _options(ns)
    name = Path(recipe).stem if recipe else "default"
    if ns.dry_run:
        if opts is None:
            raise ConfigError("--dry-run prints the Slurm script; it has no meaning with "
                              "--local.")
        script, _ = sw.submit_sweep(sweep_dir, points, opts, name, ns.max_parallel,
                                    dry_run=True)
        print(script, end="")
        for p in points:
            print(f"# point {p.index}: {p.dir}", file=sys.stderr)
        return 0
    if ns.local:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        sw.write_sweep(sweep_dir, recipe, overrides, spec, points, configs, local=True)
        status = sw.run_local(sweep_dir, points, configs)
        _print_compare(sweep_dir)
        return 0 if all(s == "done" for s in status) else 1
    from trainlab.launch import slurm

    slurm.require("sbatch", "submitting the sweep")
    sw.write_sweep(sweep_dir, recipe, overrides, spec, points, configs, local=False)
    _, jobs = sw.submit_sweep(sweep_dir, points, opts, name, ns.max_parallel, dry_run=False)
    ids = ", ".join(f"{j['job_id']} (points {j['first']}-{j['last']})" for j in jobs)
    print(f"submitted array job{'s' if len(jobs) > 1 else ''} {ids}\n  watch   trainlab "
          f"status {sweep_dir}\n  results trainlab compare {sweep_dir}")
    return 0


def _print_compare(sweep_dir: Path) -> None:
    from trainlab.cli import main

    main(["compare", str(sweep_dir)])


def cmd_status(ns: argparse.Namespace) -> int:
    from trainlab.launch.status import format_rows, status_rows

    print(format_rows(status_rows(Path(ns.path))))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add submit, sweep and status to the CLI."""
    s = sub.add_parser("submit", help="submit a training run as a Slurm batch job",
                       description="Render a batch script into the run folder and sbatch it. "
                       "On USR1 (time limit) or SIGTERM (preemption) the run checkpoints, "
                       "requeues itself and resumes.")
    s.add_argument("args", nargs="*", metavar="[RECIPE] [key=value]", help=OVERRIDES_HELP)
    _add_slurm_options(s)
    s.set_defaults(func=cmd_submit)

    w = sub.add_parser("sweep", help="run many points of a recipe as one Slurm array job",
                       description="Points = product of --grid values x --random samples of "
                       "--range keys x --seeds. One run folder per point under --dir.")
    w.add_argument("args", nargs="*", metavar="[RECIPE] [key=value]", help=OVERRIDES_HELP)
    w.add_argument("--grid", action="append", metavar="KEY=V1,V2,...")
    w.add_argument("--random", type=int, metavar="N", help="sample N points of the --range keys")
    w.add_argument("--range", action="append", metavar="KEY=LOW:HIGH[:log|:lin|:int]")
    w.add_argument("--seeds", type=int, default=1, metavar="K",
                   help="repeat every point with run.seed = seed, seed+1, ... (K seeds)")
    w.add_argument("--sweep-seed", type=int, default=0, help="seed of the --random sampling")
    w.add_argument("--max-parallel", type=int, metavar="P", help="array tasks running at once")
    w.add_argument("--dir", help="sweep folder (default: sweeps/<recipe>-<timestamp>)")
    w.add_argument("--local", action="store_true",
                   help="train the points here one after another instead of submitting")
    _add_slurm_options(w)
    w.set_defaults(func=cmd_sweep)

    t = sub.add_parser("status", help="Slurm state and progress of submitted runs and sweeps")
    t.add_argument("path", nargs="?", default=".",
                   help="sweep folder, run folder, or a folder holding them (default: .)")
    t.set_defaults(func=cmd_status)

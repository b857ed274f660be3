"""The subcommands: one thin function each, calling downward. They import their modules when
they run: torch and matplotlib take seconds to load, and `trainlab --help` or `trainlab status`
should not wait for them (start-up time)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from trainlab.errors import ConfigError, TrainlabError
from trainlab.files import recipe_name

OVERRIDES_HELP = "RECIPE.yaml then key=value overrides, exactly as for `trainlab train`"
SLURM_FIELDS = ("partition", "nodes", "gpus_per_node", "cpus_per_task", "mem", "time",
                "account", "qos", "constraint", "job_name", "signal_grace_s", "sbatch", "setup",
                "python")


def split_recipe(args: list[str]) -> tuple[str | None, list[str]]:
    """[RECIPE] key=value... -> (recipe or None, overrides). A first argument without '=' or
    ending in .yaml/.yml is the recipe (folder names may contain '=', e.g. sweep points)."""
    if args and ("=" not in args[0] or args[0].endswith((".yaml", ".yml"))):
        return args[0], args[1:]
    return None, args


def positive(name: str, value: int | None) -> None:
    """A count or size given on the command line must be at least 1."""
    if value is not None and value < 1:
        raise ConfigError(f"{name} must be a positive number (got {value}).")


# ---------------------------------------------------------------------------- training
def cmd_train(ns: argparse.Namespace) -> int:
    from trainlab.config.load import build_config, read_sweep
    from trainlab.dist.threads import omp_wait_policy

    recipe, overrides = split_recipe(ns.args)
    cfg = build_config(recipe, overrides)
    if recipe is not None and read_sweep(recipe) is not None:  # a sweep recipe: its base config
        print(f"trainlab: note: {recipe} has a sweep: section; `trainlab train` trains its base "
              f"config once (run the grid with `trainlab sweep {recipe} --local`).",
              file=sys.stderr)
    policy = omp_wait_policy(cfg.run.threads, os.environ)  # before torch starts OpenMP
    if policy:
        os.environ["OMP_WAIT_POLICY"] = policy
    from trainlab.launch.job import train_job

    train_job(cfg, recipe_name(recipe))
    return 0


def cmd_eval(ns: argparse.Namespace) -> int:
    from trainlab.engine.run import evaluate_run

    res = evaluate_run(ns.path, ns.split, ns.checkpoint, ns.overrides)
    top5 = f"  top-5 {res['top5']:.4f}" if "top5" in res else ""
    acc = f"accuracy {res['acc']:.4f}{top5}  " if "acc" in res else ""  # none for mae/simclr
    print(f"{res['split']} {acc}loss {res['loss']:.4f}  ({res['n']} images, "
          f"{res['checkpoint']})")
    return 0


def cmd_knn(ns: argparse.Namespace) -> int:
    from trainlab.engine.knn import knn_eval

    res = knn_eval(ns.path, ns.k, ns.overrides)
    print(f"test kNN accuracy {res['knn_acc']:.4f}  (k={res['k']}, T={res['temperature']:g}; "
          f"{res['n_test']} test images, memory bank {res['n_bank']} train images; "
          f"{res['checkpoint']})")
    return 0


def cmd_config_show(ns: argparse.Namespace) -> int:
    from trainlab.config.load import build_config, dump_yaml
    from trainlab.engine.checks import check_config

    cfg = build_config(*split_recipe(ns.args))
    check_config(cfg)
    print(dump_yaml(cfg), end="")
    return 0


def cmd_models(ns: argparse.Namespace) -> int:
    from trainlab.config.schema import ModelConfig
    from trainlab.models import ImageSpec, build_model, count_params, list_models

    positive("--image-size", ns.image_size)
    positive("--num-classes", ns.num_classes)
    if ns.channels not in (1, 3):
        raise ConfigError(f"--channels must be 1 (grey) or 3 (RGB) (got {ns.channels}).")
    spec = ImageSpec(channels=ns.channels, height=ns.image_size, width=ns.image_size,
                     num_classes=ns.num_classes)
    print(f"{'name':<12} {'family':<8} {'params':>10}  description "
          f"(params for {ns.channels}x{ns.image_size}x{ns.image_size}, {ns.num_classes} classes)")
    for name, family, desc in list_models():
        try:
            n = f"{count_params(build_model(ModelConfig(name=name), spec)) / 1e6:.2f}M"
        except TrainlabError:
            n = "n/a"
        print(f"{name:<12} {family:<8} {n:>10}  {desc}")
    return 0


def cmd_data_inspect(ns: argparse.Namespace) -> int:
    from trainlab.config.load import build_config
    from trainlab.data.inspect import spec_overrides
    from trainlab.report.data import inspect_data

    recipe, overrides = split_recipe(ns.args)
    if recipe is not None and not recipe.endswith((".yaml", ".yml")):
        recipe, overrides = None, [*spec_overrides(recipe), *overrides]
    cfg = build_config(recipe, overrides)
    text, png = inspect_data(cfg, Path(ns.out or f"data-{cfg.data.name}.png"))
    print(text)
    print(f"sample grid: {png}")
    return 0


def cmd_data_preview(ns: argparse.Namespace) -> int:
    from trainlab.config.load import build_config
    from trainlab.engine.checks import check_config
    from trainlab.report.data import preview_augment

    positive("--images", ns.images)
    positive("--views", ns.views)
    recipe, overrides = split_recipe(ns.args)
    cfg = build_config(recipe, overrides)
    check_config(cfg)
    out = Path(ns.out or f"augment-{recipe_name(recipe)}.png")
    print(f"augmentation preview: {preview_augment(cfg, out, ns.images, ns.views)}")
    return 0


def cmd_lr_find(ns: argparse.Namespace) -> int:
    from trainlab.launch.lr_find import lr_find_command

    lr_find_command(*split_recipe(ns.args), ns.start, ns.end, ns.steps, ns.out)
    return 0


# ---------------------------------------------------------------------------- clusters
def _slurm_options(ns: argparse.Namespace):
    from trainlab.launch.script import resolve_options

    return resolve_options({k: getattr(ns, k, None) for k in SLURM_FIELDS})


def cmd_submit(ns: argparse.Namespace) -> int:
    from trainlab.launch.commands import submit_command

    submit_command(*split_recipe(ns.args), _slurm_options(ns), ns.dry_run)
    return 0


def cmd_sweep(ns: argparse.Namespace) -> int:
    from trainlab.launch.commands import SweepArgs, resubmit_command, sweep_command
    from trainlab.launch.script import flag

    if ns.resubmit:
        if (ns.args or ns.grid or ns.range or ns.random or ns.local or ns.parallel != 1
                or ns.seeds is not None or ns.sweep_seed is not None or ns.dir):
            raise ConfigError("--resubmit DIR takes the points from DIR/sweep.json and submits "
                              "them to Slurm: give no recipe, overrides, --grid/--range/--random, "
                              "--seeds, --sweep-seed, --dir, --local or --parallel with it.")
        return resubmit_command(Path(ns.resubmit), _slurm_options(ns), ns.max_parallel,
                                ns.dry_run)
    if ns.sweep_seed is not None and not ns.random:
        raise ConfigError(f"--sweep-seed {ns.sweep_seed} seeds the sampling of --random N "
                          f"points from the --range keys, and this sweep samples none: leave it "
                          f"out (--seeds K repeats every point with other run.seed values).")
    if ns.local:
        given = [flag(k) for k in (*SLURM_FIELDS, "max_parallel")
                 if getattr(ns, k, None) is not None]
        given += ["--dry-run"] * ns.dry_run  # (it prints the Slurm script)
        if given:
            raise ConfigError(f"Slurm option{'s' if len(given) > 1 else ''} {', '.join(given)} "
                              f"given with --local, which trains the points on this machine "
                              f"where Slurm options have no effect: leave them out (--parallel N "
                              f"trains N points at once here), or drop --local to submit the "
                              f"sweep to Slurm.")

    a = SweepArgs(grid=ns.grid or [], range=ns.range or [], random=ns.random or 0,
                  seeds=ns.seeds, sweep_seed=ns.sweep_seed or 0, max_parallel=ns.max_parallel,
                  dir=ns.dir, local=ns.local, parallel=ns.parallel,
                  dry_run=ns.dry_run)
    return sweep_command(*split_recipe(ns.args), a, None if ns.local else _slurm_options(ns))


def cmd_status(ns: argparse.Namespace) -> int:
    from trainlab.launch.commands import status_command

    status_command(Path(ns.path))
    return 0


def cmd_compare(ns: argparse.Namespace) -> int:
    from trainlab.launch.compare import compare_command

    compare_command(Path(ns.sweep_dir), ns.metric, ns.top)
    return 0


# ---------------------------------------------------------------------------- results
def cmd_report(ns: argparse.Namespace) -> int:
    from trainlab.launch.results import report_command

    print(f"report: {report_command(Path(ns.path))}")
    return 0


def cmd_runs(ns: argparse.Namespace) -> int:
    from trainlab.launch.results import runs_command

    runs_command(Path(ns.dir), ns.sort, ns.json)
    return 0


def cmd_predict(ns: argparse.Namespace) -> int:
    from trainlab.launch.results import predict_command

    predict_command(ns.path, ns.inputs, ns.topk, ns.out, ns.skip_bad_files, ns.checkpoint)
    return 0


def cmd_export(ns: argparse.Namespace) -> int:
    from trainlab.launch.results import export_command

    export_command(ns.path, ns.format, ns.out, ns.checkpoint, ns.overrides)
    return 0

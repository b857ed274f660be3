"""Command line: the only place argv is read. One thin function per subcommand calls downward.

Options and `key=value` overrides may come in any order (`trainlab eval RUN --split val
data.root=X` and `trainlab eval RUN data.root=X --split val` are the same). Every argument
error is a one-paragraph `trainlab: error:` with exit code 2, like every other user mistake.

The commands import their modules when they run: torch and matplotlib take seconds to load,
and `trainlab --help` or `trainlab status` should not wait for them (start-up time).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from trainlab.errors import ConfigError, Interrupted, TrainlabError
from trainlab.files import recipe_name

EPILOG = ("Overrides are key=value pairs on top of the recipe, e.g. optim.lr=3e-4 "
          "model.name=vit_tiny; options and overrides may come in any order.")
OVERRIDES_HELP = "RECIPE.yaml then key=value overrides, exactly as for `trainlab train`"
SLURM_FIELDS = ("partition", "nodes", "gpus_per_node", "cpus_per_task", "mem", "time",
                "account", "qos", "constraint", "job_name", "signal_grace_s", "sbatch", "setup",
                "python")


class Parser(argparse.ArgumentParser):
    """argparse with trainlab's error format: `trainlab: error: ...`, exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"trainlab: error: {message} (see `{self.prog} --help`).", file=sys.stderr)
        sys.exit(2)


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
    from trainlab.launch.commands import SweepArgs, sweep_command

    a = SweepArgs(grid=ns.grid or [], range=ns.range or [], random=ns.random or 0,
                  seeds=ns.seeds, sweep_seed=ns.sweep_seed, max_parallel=ns.max_parallel,
                  dir=ns.dir, local=ns.local, dry_run=ns.dry_run)
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


# ---------------------------------------------------------------------------- parser
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


def _recipe_args(p: argparse.ArgumentParser, nargs: str = "*",
                 metavar: str = "[RECIPE] [key=value]") -> None:
    p.add_argument("args", nargs=nargs, metavar=metavar, help=OVERRIDES_HELP)
    p.set_defaults(rest="args")


def _overrides(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help=f"e.g. {example}")
    p.set_defaults(rest="overrides")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="trainlab", description="Train image classifiers.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True,
                           parser_class=Parser)

    t = sub.add_parser("train", help="train a model", epilog=EPILOG,
                       description="Train from defaults <- RECIPE.yaml <- key=value overrides.")
    _recipe_args(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint or run dir", epilog=EPILOG)
    e.add_argument("path", help="checkpoint .pt file or run folder")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--checkpoint", default="last", choices=["last", "best"],
                   help="which checkpoint of a run folder (default: last)")
    _overrides(e, "data.root=/elsewhere run.device=cpu")
    e.set_defaults(func=cmd_eval)

    k = sub.add_parser("knn", help="kNN accuracy of a run's frozen encoder on the test split",
                       description="Features of the frozen encoder (L2-normalized) for the "
                       "train split form the memory bank; each test image takes a vote of its k "
                       "most cosine-similar train images weighted by exp(sim / "
                       "method.knn_temperature).", epilog=EPILOG)
    k.add_argument("path", metavar="RUN_OR_CHECKPOINT", help="run folder or checkpoint .pt")
    k.add_argument("--k", type=int, default=None, help="neighbours (default: method.knn_k)")
    _overrides(k, "data.root=/elsewhere method.knn_temperature=0.1")
    k.set_defaults(func=cmd_knn)

    c = sub.add_parser("config", help="config tools")
    csub = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True,
                            parser_class=Parser)
    cs = csub.add_parser("show", help="print the resolved, validated config", epilog=EPILOG)
    _recipe_args(cs)
    cs.set_defaults(func=cmd_config_show)

    d = sub.add_parser("data", help="inspect data sets and preview augmentation")
    dsub = d.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True,
                            parser_class=Parser)
    di = dsub.add_parser("inspect", help="counts, image size, mean/std and a PNG sample grid",
                         description="DATA_SPEC is a data set name (fashion-mnist), an image "
                         "folder (root/train/<class>/...), an .npz file, or a recipe; "
                         "key=value overrides follow.")
    _recipe_args(di, "+", "DATA_SPEC [key=value]")
    di.add_argument("--out", help="PNG path (default: data-<name>.png)")
    di.set_defaults(func=cmd_data_inspect)
    dp = dsub.add_parser("preview-augment", help="PNG grid of images augmented as in training",
                         epilog=EPILOG)
    _recipe_args(dp)
    dp.add_argument("--out", help="PNG path (default: augment-<recipe>.png)")
    dp.add_argument("--images", type=int, default=8, help="rows: training images")
    dp.add_argument("--views", type=int, default=7, help="augmented views per image")
    dp.set_defaults(func=cmd_data_preview)

    m = sub.add_parser("models", help="list models with parameter counts")
    m.add_argument("--channels", type=int, default=3)
    m.add_argument("--image-size", type=int, default=32)
    m.add_argument("--num-classes", type=int, default=10)
    m.set_defaults(func=cmd_models)

    lf = sub.add_parser(
        "lr-find", help="learning-rate range test: loss vs exponentially growing lr",
        description="Train with an lr growing exponentially from --start to --end over --steps "
        "optimizer steps (same data, model, method, optimizer and batch as `trainlab train` "
        "with these arguments); write the loss per lr (csv, png, json) and suggest an lr and "
        "a `trainlab sweep` command around it.",
        epilog=EPILOG + " The schedule keys (sched.*) and optim.lr are not used.")
    _recipe_args(lf)
    lf.add_argument("--start", type=float, default=1e-7, help="first lr (default: 1e-7)")
    lf.add_argument("--end", type=float, default=10.0, help="last lr (default: 10)")
    lf.add_argument("--steps", type=int, default=200,
                    help="optimizer steps, one lr each (default: 200)")
    lf.add_argument("--out", help="output folder (default: run.dir if given, else "
                    "runs/lr-find-<recipe>-<timestamp>)")
    lf.set_defaults(func=cmd_lr_find)

    s = sub.add_parser("submit", help="submit a training run as a Slurm batch job",
                       description="Render a batch script into the run folder and sbatch it. "
                       "On USR1 (time limit) or SIGTERM (preemption) the run checkpoints, "
                       "requeues itself and resumes.", epilog=EPILOG)
    _recipe_args(s)
    _add_slurm_options(s)
    s.set_defaults(func=cmd_submit)

    w = sub.add_parser("sweep", help="run many points of a recipe as one Slurm array job",
                       description="Points = product of --grid values x --random samples of "
                       "--range keys x --seeds. One run folder per point under --dir.",
                       epilog=EPILOG)
    _recipe_args(w)
    w.add_argument("--grid", action="append", metavar="KEY=V1,V2,...")
    w.add_argument("--random", type=int, metavar="N", help="sample N points of the --range keys")
    w.add_argument("--range", action="append", metavar="KEY=LOW:HIGH[:log|:lin|:int]")
    w.add_argument("--seeds", type=int, default=None, metavar="K",
                   help="repeat every point with run.seed = seed, seed+1, ... (K seeds; "
                   "default: the recipe's sweep.seeds, else 1)")
    w.add_argument("--sweep-seed", type=int, default=0, help="seed of the --random sampling")
    w.add_argument("--max-parallel", type=int, metavar="P", help="array tasks running at once")
    w.add_argument("--dir", help="sweep folder (default: sweeps/<recipe>-<timestamp>)")
    w.add_argument("--local", action="store_true",
                   help="train the points here one after another instead of submitting")
    _add_slurm_options(w)
    w.set_defaults(func=cmd_sweep)

    st = sub.add_parser("status", help="Slurm state and progress of submitted runs and sweeps")
    st.add_argument("path", nargs="?", default=".",
                    help="sweep folder, run folder, or a folder holding them (default: .)")
    st.set_defaults(func=cmd_status)

    cp = sub.add_parser(
        "compare", help="table, CSV and plot of every point of a sweep",
        description="Rank the points of a sweep folder (made by `trainlab sweep`) by a metric; "
        "print a table, write SWEEP_DIR/compare.csv and SWEEP_DIR/compare.png (the metric "
        "against each varied key). Unfinished points are listed with what they logged so far.")
    cp.add_argument("sweep_dir", metavar="SWEEP_DIR", help="folder holding sweep.json")
    cp.add_argument("--metric", default="best_val_acc",
                    choices=["best_val_acc", "best_val_loss", "final_val_acc", "test_acc",
                             "test_loss", "test_top5"],
                    help="rank by this (default: best_val_acc; pretraining sweeps without "
                    "accuracy fall back to best_val_loss)")
    cp.add_argument("--top", type=int, default=None, metavar="N",
                    help="print only the N best rows (the CSV and plot keep all)")
    cp.set_defaults(func=cmd_compare)

    rp = sub.add_parser(
        "report", help="HTML page of a run or a sweep (self-contained, opens offline)",
        description="RUN_DIR: write RUN_DIR/report.html (summary, config, curves, confusion "
        "matrix, per-class scores, misclassified images, calibration, ViT attention, MAE "
        "reconstructions, kNN/probe for pretraining) and the figures in RUN_DIR/plots/. "
        "SWEEP_DIR: the sweep's page (sortable table, metric vs swept keys, val curves, links "
        "to each point's page).")
    rp.add_argument("path", metavar="RUN_OR_SWEEP_DIR")
    rp.set_defaults(func=cmd_report)

    rn = sub.add_parser("runs", help="table of the runs under a folder (default: runs/)")
    rn.add_argument("dir", nargs="?", default="runs", metavar="DIR")
    rn.add_argument("--sort", default="date",
                    choices=["name", "status", "model", "data", "method", "best_val", "test",
                             "epochs", "wall", "date"],
                    help="column to sort by (default: date, newest first)")
    rn.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rn.set_defaults(func=cmd_runs)

    pr = sub.add_parser(
        "predict", help="classify image files with a trained run",
        description="Images (or folders of images, searched recursively) are decoded and "
        "preprocessed exactly as evaluation does. CSV columns: path,pred,prob then "
        "top2,prob2,... up to --topk (class names).")
    pr.add_argument("path", metavar="RUN_OR_CHECKPOINT")
    pr.add_argument("inputs", nargs="+", metavar="PATH", help="image files or folders")
    pr.add_argument("--topk", type=int, default=1, metavar="K",
                    help="classes per image, most probable first (default: 1)")
    pr.add_argument("--out", metavar="FILE.csv", help="write a CSV (default: a console table)")
    pr.add_argument("--skip-bad-files", action="store_true",
                    help="skip (and count) files that cannot be decoded instead of stopping")
    pr.add_argument("--checkpoint", default="last", choices=["last", "best"])
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser(
        "export", help="export a run's classifier to ONNX or TorchScript",
        description="The exported model takes float images in [0, 1], shape (N, C, H, W) with "
        "a dynamic N, contains the normalization, and returns logits. The export is checked "
        "against the original on real test images (max abs difference at most 1e-4).",
        epilog="onnx needs `pip install 'trainlab[export]'` (onnx, onnxruntime).")
    ex.add_argument("path", metavar="RUN_OR_CHECKPOINT")
    ex.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    ex.add_argument("--out", metavar="FILE",
                    help="default: model.onnx / model.pt in the run folder")
    ex.add_argument("--checkpoint", default="last", choices=["last", "best"])
    _overrides(ex, "data.root=/elsewhere")
    ex.set_defaults(func=cmd_export)
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse argv; `key=value` overrides may follow options (`eval RUN --split val a=b`):
    argparse leaves them over, and they join the subcommand's overrides."""
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or not hasattr(ns, "rest")]
    if unknown:
        sub = " ".join(v for v in (ns.command, getattr(ns, "config_command", None),
                                   getattr(ns, "data_command", None)) if v)
        Parser(prog=f"trainlab {sub}").error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        setattr(ns, ns.rest, [*getattr(ns, ns.rest), *extra])
    return ns


def main(argv: list[str] | None = None) -> int:
    try:
        ns = parse(argv)
    except SystemExit as e:  # --help (0) or an argument error (2, message printed)
        return int(e.code or 0)
    try:
        return ns.func(ns)
    except TrainlabError as e:
        prefix = "trainlab: " if isinstance(e, Interrupted) else "trainlab: error: "
        print(prefix + str(e), file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("trainlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

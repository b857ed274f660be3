"""The argument parser of every subcommand (argparse), with trainlab's error format."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from trainlab.cli.commands import (
    OVERRIDES_HELP,
    cmd_compare,
    cmd_config_show,
    cmd_data_inspect,
    cmd_data_preview,
    cmd_eval,
    cmd_export,
    cmd_knn,
    cmd_lr_find,
    cmd_models,
    cmd_predict,
    cmd_report,
    cmd_runs,
    cmd_status,
    cmd_submit,
    cmd_sweep,
    cmd_train,
)

EPILOG = ("Overrides are key=value pairs on top of the recipe, e.g. optim.lr=3e-4 "
          "model.name=vit_tiny; options and overrides may come in any order.")


class Parser(argparse.ArgumentParser):
    """argparse with trainlab's error format: `trainlab: error: ...`, exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"trainlab: error: {message} (see `{self.prog} --help`).", file=sys.stderr)
        sys.exit(2)


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
    w.add_argument("--sweep-seed", type=int, default=None,
                   help="seed of the --random sampling (default: 0)")
    w.add_argument("--max-parallel", type=int, metavar="P", help="array tasks running at once")
    w.add_argument("--dir", help="sweep folder (default: sweeps/<recipe>-<timestamp>)")
    w.add_argument("--local", action="store_true",
                   help="train the points here one after another instead of submitting")
    w.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="with --local: train N points at once, the CPUs divided between them "
                   "(each point's output goes to POINT/train.log)")
    w.add_argument("--resubmit", metavar="DIR",
                   help="submit the unfinished points (not done, queued or running) of the "
                        "sweep in DIR as one array job; they resume from their checkpoints")
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

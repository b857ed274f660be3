"""Command line: the only place argv is read. One function per subcommand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainlab.errors import TrainlabError

EPILOG = ("Overrides are key=value pairs on top of the recipe, e.g. optim.lr=3e-4 "
          "model.name=vit_tiny")


def _split_recipe(args: list[str]) -> tuple[str | None, list[str]]:
    """[RECIPE] key=value... -> (recipe or None, overrides). A first argument without '=' or
    ending in .yaml/.yml is the recipe (folder names may contain '=', e.g. sweep points)."""
    if args and ("=" not in args[0] or args[0].endswith((".yaml", ".yml"))):
        return args[0], args[1:]
    return None, args


def _recipe_name(recipe: str | None) -> str:
    return Path(recipe).stem if recipe else "default"


def cmd_train(ns: argparse.Namespace) -> int:
    from trainlab.config.load import build_config
    from trainlab.engine.run import train

    recipe, overrides = _split_recipe(ns.args)
    train(build_config(recipe, overrides), _recipe_name(recipe))
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
    from trainlab.knn import knn_eval

    res = knn_eval(ns.path, ns.k, ns.overrides)
    print(f"test kNN accuracy {res['knn_acc']:.4f}  (k={res['k']}, T={res['temperature']:g}; "
          f"{res['n_test']} test images, memory bank {res['n_bank']} train images; "
          f"{res['checkpoint']})")
    return 0


def cmd_config_show(ns: argparse.Namespace) -> int:
    from trainlab.config.load import build_config, dump_yaml
    from trainlab.engine.checks import check_config

    recipe, overrides = _split_recipe(ns.args)
    cfg = build_config(recipe, overrides)
    check_config(cfg)
    print(dump_yaml(cfg), end="")
    return 0


def cmd_models(ns: argparse.Namespace) -> int:
    from trainlab.config.schema import ModelConfig
    from trainlab.models import ImageSpec, build_model, count_params, list_models

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
    from trainlab.data.inspect import inspect_data, spec_overrides

    recipe, overrides = _split_recipe(ns.args)
    if recipe is not None and not recipe.endswith((".yaml", ".yml")):
        recipe, overrides = None, [*spec_overrides(recipe), *overrides]
    cfg = build_config(recipe, overrides)
    out = Path(ns.out or f"data-{cfg.data.name}.png")
    text, png = inspect_data(cfg, out)
    print(text)
    print(f"sample grid: {png}")
    return 0


def cmd_data_preview(ns: argparse.Namespace) -> int:
    from trainlab.config.load import build_config
    from trainlab.data.inspect import preview_augment
    from trainlab.engine.checks import check_config

    recipe, overrides = _split_recipe(ns.args)
    cfg = build_config(recipe, overrides)
    check_config(cfg)
    out = Path(ns.out or f"augment-{_recipe_name(recipe)}.png")
    print(f"augmentation preview: {preview_augment(cfg, out, ns.images, ns.views)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trainlab", description="Train image classifiers.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="train a model", epilog=EPILOG,
                       description="Train from defaults <- RECIPE.yaml <- key=value overrides.")
    t.add_argument("args", nargs="*", metavar="[RECIPE] [key=value]")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint or run dir")
    e.add_argument("path", help="checkpoint .pt file or run folder")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--checkpoint", default="last", choices=["last", "best"],
                   help="which checkpoint of a run folder (default: last)")
    e.add_argument("overrides", nargs="*", metavar="key=value",
                   help="e.g. data.root=/elsewhere run.device=cpu")
    e.set_defaults(func=cmd_eval)

    k = sub.add_parser("knn", help="kNN accuracy of a run's frozen encoder on the test split",
                       description="Features of the frozen encoder (L2-normalized) for the "
                       "train split form the memory bank; each test image takes a vote of its k "
                       "most cosine-similar train images weighted by exp(sim / "
                       "method.knn_temperature).")
    k.add_argument("path", metavar="RUN_OR_CHECKPOINT", help="run folder or checkpoint .pt")
    k.add_argument("--k", type=int, default=None, help="neighbours (default: method.knn_k)")
    k.add_argument("overrides", nargs="*", metavar="key=value",
                   help="e.g. data.root=/elsewhere method.knn_temperature=0.1")
    k.set_defaults(func=cmd_knn)

    c = sub.add_parser("config", help="config tools")
    csub = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    cs = csub.add_parser("show", help="print the resolved config", epilog=EPILOG)
    cs.add_argument("args", nargs="*", metavar="[RECIPE] [key=value]")
    cs.set_defaults(func=cmd_config_show)

    d = sub.add_parser("data", help="inspect data sets and preview augmentation")
    dsub = d.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    di = dsub.add_parser("inspect", help="counts, image size, mean/std and a PNG sample grid",
                         description="DATA_SPEC is a data set name (fashion-mnist), an image "
                         "folder (root/train/<class>/...), an .npz file, or a recipe; "
                         "key=value overrides follow.")
    di.add_argument("args", nargs="+", metavar="DATA_SPEC [key=value]")
    di.add_argument("--out", help="PNG path (default: data-<name>.png)")
    di.set_defaults(func=cmd_data_inspect)
    dp = dsub.add_parser("preview-augment", help="PNG grid of images augmented as in training",
                         epilog=EPILOG)
    dp.add_argument("args", nargs="*", metavar="[RECIPE] [key=value]")
    dp.add_argument("--out", help="PNG path (default: augment-<recipe>.png)")
    dp.add_argument("--images", type=int, default=8, help="rows: training images")
    dp.add_argument("--views", type=int, default=7, help="augmented views per image")
    dp.set_defaults(func=cmd_data_preview)

    m = sub.add_parser("models", help="list models with parameter counts")
    m.add_argument("--channels", type=int, default=3)
    m.add_argument("--image-size", type=int, default=32)
    m.add_argument("--num-classes", type=int, default=10)
    m.set_defaults(func=cmd_models)

    from trainlab.launch import commands, compare, lr_find

    commands.register(sub)
    lr_find.register(sub)
    compare.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return ns.func(ns)
    except TrainlabError as e:
        from trainlab.engine.trainer import Interrupted

        prefix = "trainlab: " if isinstance(e, Interrupted) else "trainlab: error: "
        print(prefix + str(e), file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("trainlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

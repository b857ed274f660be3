"""The command line: subcommands work, and every user mistake gets one clear paragraph, a
non-zero exit code and no traceback."""

from __future__ import annotations

import json

import pytest
from conftest import quick, run_cli

from trainlab.cli import main


def run_main(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv,expect", [
    (["train", "optim.lrr=0.1"], ["Unknown config key 'optim.lrr'", "optim.lr"]),
    (["train", "train.batch_size=big"], ["train.batch_size", "'big'", "integer"]),
    (["train", "nope/missing.yaml"], ["nope/missing.yaml", "does not exist"]),
    (["train", "model.name=resnet9"], ["model.name='resnet9'", "resnet18", "vit_tiny"]),
    (["train", "data.name=cifar99"], ["data.name='cifar99'", "fashion-mnist"]),
    (["train", "data.name=fashion-mnist", "data.root=/nonexistent/fm"],
     ["/nonexistent/fm", "apt-get install dataset-fashion-mnist", "data.root"]),
    (["train", "model.name=vit_tiny", "model.patch_size=3"],
     ["model.patch_size=3", "8x8", "1, 2, 4, 8"]),
    (["train", "train.batch_size=0"],
     ["train.batch_size must be >= 1 (got 0)", "try train.batch_size=128"]),
    (["train", "train.batch_size=-4"], ["train.batch_size must be >= 1 (got -4)"]),
    (["config", "show", "sched.name=linear"],
     ["sched.name must be one of: cosine, constant, step (got 'linear')"]),
    (["eval", "/nonexistent/run"], ["/nonexistent/run"]),
])
def test_bad_input_messages(capsys, tmp_path, argv, expect):
    code, out, err = run_main(capsys, *argv, *([f"run.dir={tmp_path}"] if argv[0] == "train"
                                                else []))
    assert code == 2, err
    assert err.startswith("trainlab: error: ") and "\n\n" not in err.strip()  # one paragraph
    assert "Traceback" not in err
    for e in expect:
        assert e in err, (e, err)
    assert not (tmp_path / "checkpoints").exists()


def test_nan_loss_stops_with_message(capsys, tmp_path):
    code, out, err = run_main(capsys, "train", *quick(tmp_path, "optim.name=sgd", "optim.lr=1e9",
                                                      "sched.warmup_epochs=0", "model.name=mlp"))
    assert code == 3
    assert "became nan" in err or "became inf" in err
    assert "optimizer step" in err and "lr 1e+09" in err and "optim.lr" in err


def test_no_traceback_in_a_real_process(tmp_path):
    p = run_cli("train", f"run.dir={tmp_path}", "model.name=vit_tiny", "model.patch_size=3")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and "model.patch_size" in p.stderr


def test_config_show_resolves_layers(capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  name: sgd\n  lr: 0.1\n")
    code, out, _ = run_main(capsys, "config", "show", str(recipe), "optim.lr=0.05")
    assert code == 0
    assert "name: sgd" in out and "lr: 0.05" in out and "batch_size:" in out


def test_models_lists_every_model_with_params(capsys):
    code, out, _ = run_main(capsys, "models", "--channels", "1", "--image-size", "28")
    assert code == 0
    for name in ("mlp", "cnn", "resnet18", "resnet34", "resnet50", "vit_tiny", "vit_small",
                 "vit_base"):
        assert any(line.startswith(name + " ") for line in out.splitlines()), name
    assert "M " in out


def test_train_then_eval_cli(capsys, tmp_path):
    code, out, _ = run_main(capsys, "train", *quick(tmp_path, "model.name=mlp", "train.epochs=3"))
    assert code == 0 and "test accuracy" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    p = run_cli("eval", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert f"test accuracy {summary['test_acc']:.4f}" in p.stdout
    code, out, _ = run_main(capsys, "eval", str(tmp_path / "checkpoints" / "best.pt"),
                            "--split", "val")
    assert code == 0 and "val accuracy" in out

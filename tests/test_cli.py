"""The command line: subcommands work, and every user mistake gets one clear paragraph, a
non-zero exit code and no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
    (["eval", "run.device=cpu"],  # an override where the run belongs, and no run
     ["'run.device=cpu' is no file or folder", "`trainlab eval runs/NAME run.device=cpu`"]),
    (["config", "show", "train.tta=flip", "data.augment=false"],
     ["(data.augment=false turns all augmentation off)", "data.augment=true data.flip=true."]),
    (["sweep", "--grid", "optim.lr=1e-3,1e-2", "--local", "--partition", "gpu"],
     ["Slurm option --partition given with --local", "--parallel N"]),
    (["sweep", "--grid", "optim.lr=1e-3,1e-2", "--local", "--max-parallel", "2",
      "--signal-grace", "60"], ["Slurm options --signal-grace, --max-parallel given with --local"]),
    (["sweep", "--grid", "optim.lr=1e-3,1e-2", "--local", "--parallel", "2", "--dry-run"],
     ["Slurm option --dry-run given with --local"]),
    (["sweep", "--grid", "optim.lr=1e-3,1e-2", "--sweep-seed", "3", "--dry-run"],
     ["--sweep-seed 3 seeds the sampling of --random N points", "--seeds K"]),
    (["sweep", "--resubmit", "/nonexistent/sweep", "--seeds", "3"],
     ["--resubmit DIR takes the points from DIR/sweep.json", "--seeds, --sweep-seed, --dir"]),
    (["sweep", "--resubmit", "/nonexistent/sweep", "--dir", "/tmp/x"], ["--dir"]),
    (["submit", "--cpus-per-task", "0", "--dry-run"], ["--cpus-per-task must be >= 1 (got 0)"]),
    (["submit", "--signal-grace", "-5", "--dry-run"],
     ["--signal-grace must be from 1 to 65535 (got -5)"]),
    (["submit", "--nodes", "0", "--gpus-per-node", "2", "--dry-run"],
     ["--nodes must be >= 1 (got 0)"]),
    (["submit", "--gpus-per-node", "-1", "--dry-run"], ["--gpus-per-node must be >= 0 (got -1)"]),
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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 1-epoch digits MLP run (train split 1294 images, digits: no flips)."""
    run = tmp_path_factory.mktemp("run")
    assert main(["train", *quick(run, "model.name=mlp", "model.hidden=[16]",
                                 "train.epochs=1")]) == 0
    return run


def _slurm_sweep(root: Path, edit=None) -> None:
    """A Slurm sweep folder `root/s` of two unsubmitted points, as `trainlab sweep` leaves it;
    `edit(manifest, sweep_dir)` damages it."""
    sweep = root / "s"
    man = {"format": "trainlab-sweep/1", "recipe": None, "recipe_name": "default",
           "overrides": [], "varied": ["optim.lr"], "jobs": [], "local": False,
           "points": [{"index": i, "dir": f"00{i}_optim.lr={lr}", "overrides": {"optim.lr": lr}}
                      for i, lr in enumerate([0.001, 0.01])]}
    for p in man["points"]:
        (sweep / p["dir"]).mkdir(parents=True)
        (sweep / p["dir"] / "job.yaml").write_text("train: {epochs: 1}\n")
    if edit:
        edit(man, sweep)
    (sweep / "sweep.json").write_text(json.dumps(man))


def _defaults(text: str):
    def prep(root: Path) -> None:
        (root / "slurm.yaml").write_text(text)
    return prep


def _damage(**kw):
    return lambda root: _slurm_sweep(root, lambda man, sweep: man.update(kw))


def _set_point(i: int, key: str, value):
    return lambda root: _slurm_sweep(root, lambda man, sweep: man["points"][i].update({key: value}))


def _drop_index(root: Path) -> None:
    _slurm_sweep(root, lambda man, sweep: man["points"][1].pop("index"))


def _drop_point_folder(root: Path) -> None:
    _slurm_sweep(root, lambda man, sweep: shutil.rmtree(sweep / man["points"][1]["dir"]))


SLURM_YAML = {"TRAINLAB_SLURM_CONFIG": "{tmp}/slurm.yaml"}
ONE_RANK = {"RANK": "0", "WORLD_SIZE": "1"}


# (argv, prepare the folder {tmp}, environment, expected pieces of the one-paragraph error);
# {run} is a finished digits run
@pytest.mark.parametrize("argv,prep,env,expect", [
    (["status", "{tmp}/s"], _damage(jobs=[{"job_id": "7", "first": "a", "last": 1}]), {},
     ["s/sweep.json is damaged", "job record 0 must have integer 'first' and 'last'"]),
    (["compare", "{tmp}/s"], _drop_index, {}, ["'points' entry 1 must be a mapping with index 1"]),
    (["report", "{tmp}/s"], _set_point(0, "overrides", "x"), {},
     ["'points' entry 0: 'overrides' must map keys to values"]),
    (["sweep", "--resubmit", "{tmp}/s", "--dry-run"], _damage(submit_error={"first": "a"}), {},
     ["'submit_error' must have integer 'first' and 'last'"]),
    (["sweep", "--resubmit", "{tmp}/s", "--dry-run"], _set_point(0, "dir", "../elsewhere"), {},
     ["'dir' must be the name of a folder inside the sweep (got '../elsewhere')"]),
    (["status", "{tmp}/s"], _damage(jobs="garbage"), {}, ["'jobs' must be a list"]),
    (["sweep", "--resubmit", "{tmp}/s", "--max-parallel", "-3", "--dry-run"], _slurm_sweep, {},
     ["--max-parallel must be at least 1 (got -3)"]),
    (["sweep", "--resubmit", "{tmp}/s", "--dry-run"], _drop_point_folder, {},
     ["1 point folder(s) lack job.yaml", "001_optim.lr=0.01", "new --dir"]),
    (["status", "{tmp}/slurm.yaml"], _defaults(""), {}, ["slurm.yaml is a file"]),
    (["submit", "--dry-run"], _defaults("partition: [a, b]\n"), SLURM_YAML,
     ["'partition' must be a single value"]),
    (["submit", "--dry-run"], _defaults("cpus_per_task: 0\n"), SLURM_YAML,
     ["--cpus-per-task ('cpus_per_task' in the Slurm defaults file", "must be >= 1 (got 0)"]),
    (["train"], None, {**ONE_RANK, "MASTER_PORT": "abc"},
     ["MASTER_PORT='abc' must be an integer from 1 to 65534", "unset it"]),
    (["train"], None, {**ONE_RANK, "MASTER_PORT": "70000"}, ["MASTER_PORT='70000'"]),
    (["train"], None, {"RANK": "0", "WORLD_SIZE": "0"}, ["WORLD_SIZE='0' must be an integer >= 1"]),
    (["train"], None, {"RANK": "3", "WORLD_SIZE": "2"}, ["RANK='3'", "below WORLD_SIZE=2"]),
    (["train"], None, {"SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0", "SLURM_JOB_ID": "x"},
     ["SLURM_JOB_ID='x' must be an integer >= 0"]),
    (["eval", "{run}", "--split", "val", "data.val_fraction=0.5"], None, {},
     ["measures the val split", "data.val_fraction=0.5 (the run used 0.1)"]),
    (["eval", "{run}", "data.split_seed=7"], None, {},
     ["measures the test split", "data.split_seed=7 (the run used 0)"]),
    (["knn", "{run}", "data.test_fraction=0.5"], None, {},
     ["`trainlab knn` measures the test split", "data.test_fraction=0.5 (the run used 0.2)"]),
    (["knn", "{run}", "--k", "100000"], None, {},
     ["k=100000 neighbours asked", "holds only 1294 images", "--k 1294 or fewer"]),
    (["knn", "{run}", "method.knn_k=1295"], None, {}, ["k=1295 neighbours asked"]),
    (["knn", "{run}", "train.tta=flip"], None, {},
     ["`trainlab knn` measures the saved weights as they are", "train.tta would change nothing",
      "Leave it out"]),
    (["eval", "{run}", "optim.lr=1", "model.dropout=0.5", "run.device=cpu"], None, {},
     ["optim.lr, model.dropout would change nothing", "Leave them out"]),
    (["eval", "{run}", "train.tta=flip"], None, {},
     ["data.flip is unset and digits's default is no flips", "data.flip=true."]),
])
def test_bad_input_messages_with_files(capsys, tmp_path, monkeypatch, tiny_run, argv, prep,
                                       env, expect):
    """Like the table above, for inputs that need a folder, a run or an environment."""
    if prep:
        prep(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v.format(tmp=tmp_path))
    argv = [a.format(tmp=tmp_path, run=tiny_run) for a in argv]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    out_dir = [f"run.dir={tmp_path / 'r'}"] if argv[0] == "train" else []
    code, out, err = run_main(capsys, *argv, *out_dir)
    assert code == 2, err
    assert err.startswith("trainlab: error: ") and "\n\n" not in err.strip()  # one paragraph
    assert "Traceback" not in err
    for e in expect:
        assert e in err, (e, err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_knn_k_of_the_run_is_capped_at_a_small_memory_bank(capsys, tiny_run):
    """The run's method.knn_k (20) above a bank of 10 images (1% of the labels, one per
    class): all of the bank votes and the output says k=10; only a k the user asks for is
    refused."""
    code, out, err = run_main(capsys, "knn", str(tiny_run), "data.labels_fraction=0.01")
    assert code == 0, err
    assert "(k=10," in out and "memory bank 10 train images" in out


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

"""Sweep points that start from other points (`model.init: point:I`, launch.chain): which
point each one needs, the order and Slurm dependencies that follow, and a local pretrain-then-
probe sweep that runs end to end (also with --parallel, where the probe must wait)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import quick

from trainlab.cli import main
from trainlab.config.load import read_sweep
from trainlab.engine.pretrained import resolve_checkpoint
from trainlab.errors import ConfigError
from trainlab.launch import chain, slurm
from trainlab.launch import sweep as sw
from trainlab.launch.script import SlurmOptions

MLP = {"data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [16]},
       "sched": {"warmup_epochs": 0}, "train": {"epochs": 1},
       "run": {"tensorboard": False, "report": False, "progress": False, "threads": 1}}


def _recipe(tmp_path: Path, points: list[dict], **sweep) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump({**MLP, "sweep": {"points": points, **sweep}}))
    return path


def _plan(recipe: Path, tmp_path: Path, overrides=(), grid=(), seeds=None):
    spec = sw.spec_with_recipe(read_sweep(recipe), list(overrides), list(grid), [], 0, seeds)
    return sw.plan(str(recipe), list(overrides), spec, tmp_path / "s")


PRE_THEN_TUNE = [{"optim.lr": 0.01, "model.init": None},
                 {"optim.lr": 0.001, "model.init": "point:0"}]


def test_each_combination_starts_from_the_run_with_the_same_grid_values_and_seed(tmp_path):
    recipe = _recipe(tmp_path, PRE_THEN_TUNE, grid={"train.batch_size": [16, 32]}, seeds=2)
    points, configs = _plan(recipe, tmp_path)
    assert len(points) == 8 and [p.needs for p in points[:4]] == [[]] * 4
    for p, cfg in zip(points[4:], configs[4:], strict=True):
        (j,) = p.needs
        target = points[j]
        assert target.overrides["model.init"] is None and target.index < p.index
        for key in ("train.batch_size", "run.seed"):  # the same combination
            assert target.overrides[key] == p.overrides[key]
        assert cfg.model.init == str(tmp_path / "s" / target.dir)  # the folder, absolute
        assert p.overrides["model.init"] == "point:0" and "model.init=point-0" in p.dir


@pytest.mark.parametrize("points,message", [
    ([{"model.init": "point:0"}, {"model.init": None}], "the first point has no earlier point"),
    ([{"model.init": None}, {"model.init": "point:1"}], "point:0 to point:0"),
    ([{"model.init": None}, {"model.init": "point:7"}], "must name an earlier entry"),
    ([{"model.init": None}, {"model.init": "point:first"}], "must name an earlier entry"),
    ([{"model.init": None}, {"model.init": "point:-1"}], "must name an earlier entry"),
])
def test_bad_point_references_are_refused_naming_the_point(tmp_path, capsys, points, message):
    recipe = _recipe(tmp_path, points)
    with pytest.raises(ConfigError, match=message):
        _plan(recipe, tmp_path)
    assert main(["sweep", str(recipe), "--local", "--dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainlab: error: ") and "model.init" in err
    assert not (tmp_path / "d").exists()


def test_point_references_only_inside_a_recipes_points(tmp_path):
    recipe = _recipe(tmp_path, [{"optim.lr": 0.1}, {"optim.lr": 0.2}])
    with pytest.raises(ConfigError, match="only works inside a sweep recipe's points list"):
        _plan(recipe, tmp_path, overrides=["model.init=point:0"])
    with pytest.raises(ConfigError, match="only works inside a sweep recipe's points list"):
        _plan(recipe, tmp_path, grid=["model.init=point:0"])


def test_parts_split_where_points_start_from_earlier_parts():
    # 0, 1 pretrain; 2, 3 start from them; 4 needs nothing; 5 starts from 3 (a chain)
    needs = [[], [], [0], [1], [], [3]]
    assert chain.waves(needs) == [0, 0, 1, 1, 0, 2]
    assert chain.parts(needs, 1000) == [(0, 1, []), (2, 3, [0]), (4, 4, []), (5, 5, [1])]
    assert chain.parts(needs, 1) == [(0, 0, []), (1, 1, []), (2, 2, [0]), (3, 3, [1]),
                                     (4, 4, []), (5, 5, [3])]
    assert chain.parts([[]] * 5, 2) == [(0, 1, []), (2, 3, []), (4, 4, [])]


def test_slurm_parts_wait_for_the_jobs_of_the_points_they_start_from(tmp_path, monkeypatch):
    """The sbatch calls: pretraining first, then the dependent array with afterok on it (and
    --kill-on-invalid-dep, so a failed pretraining cancels it instead of a pending forever)."""
    points, _ = _plan(_recipe(tmp_path, PRE_THEN_TUNE, seeds=2), tmp_path)
    calls: list[list[str]] = []

    def sbatch(script: str, args: list[str], script_path: str = "") -> str:
        calls.append(args)
        return str(100 + len(calls))

    monkeypatch.setattr(slurm, "sbatch", sbatch)
    monkeypatch.setattr(slurm, "max_array_size", lambda: 1001)
    sweep_dir = tmp_path / "s"
    sw.write_sweep(sweep_dir, None, [], sw.SweepSpec(), points, [], local=False)
    _, jobs = sw.submit_sweep(sweep_dir, points, SlurmOptions(), "lab", None, dry_run=False)
    assert [(j["job_id"], j["first"], j["last"]) for j in jobs] == [("101", 0, 1), ("102", 2, 3)]
    assert "--dependency" not in " ".join(calls[0])
    assert "--dependency=afterok:101" in calls[1] and "--kill-on-invalid-dep=yes" in calls[1]
    assert "--export=ALL,TRAINLAB_ARRAY_OFFSET=2" in calls[1] and "--array=0-1" in calls[1]
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    assert [p.get("needs", []) for p in manifest["points"]] == [[], [], [0], [1]]


def test_a_run_that_has_not_finished_is_not_an_encoder(tmp_path, capsys):
    """model.init=RUN needs RUN finished: a point started early would get a half-trained
    encoder without a word. The checkpoint file itself may still be given on purpose."""
    run = tmp_path / "pre"
    assert main(["train", *quick(run, "model.name=mlp", "train.epochs=1")]) == 0
    assert resolve_checkpoint(str(run), finished=True) == run / "checkpoints" / "last.pt"
    (run / "summary.json").unlink()
    with pytest.raises(ConfigError, match="has not finished.*model.init=.*last.pt"):
        resolve_checkpoint(str(run), finished=True)
    assert resolve_checkpoint(str(run / "checkpoints" / "last.pt"), finished=True) == \
        run / "checkpoints" / "last.pt"
    assert main(["train", *quick(tmp_path / "probe", "model.name=mlp", "train.epochs=1",
                                 f"model.init={run}")]) == 2  # through `train`, as a user
    err = capsys.readouterr().err
    assert err.startswith("trainlab: error: ") and "has not finished" in err
    assert resolve_checkpoint(str(run)) == run / "checkpoints" / "last.pt"  # knn: any run


@pytest.mark.parametrize("parallel", [1, 2])
def test_local_sweep_trains_the_pretraining_first_then_starts_from_it(tmp_path, capsys,
                                                                      parallel):
    """With --parallel 2 both points could start at once; the second must wait for the first
    (else model.init finds no finished run and the point fails)."""
    recipe = _recipe(tmp_path, PRE_THEN_TUNE)
    out = tmp_path / "lab"
    assert main(["sweep", str(recipe), "--local", "--parallel", str(parallel), "--dir",
                 str(out)]) == 0
    assert "2 points, 2 done" in capsys.readouterr().out
    manifest = json.loads((out / "sweep.json").read_text())
    pre, tuned = (out / p["dir"] for p in manifest["points"])
    cfg = yaml.safe_load((tuned / "config.yaml").read_text())
    assert cfg["model"]["init"] == str(pre)
    summary = json.loads((tuned / "summary.json").read_text())
    assert 0 <= summary["test_acc"] <= 1


def test_a_point_whose_pretraining_failed_is_not_trained(tmp_path, capsys):
    recipe = _recipe(tmp_path, [{"optim.lr": 1e9, "optim.name": "sgd", "model.init": None},
                                {"optim.lr": 0.01, "optim.name": "adamw",
                                 "model.init": "point:0"}])
    out = tmp_path / "lab"
    assert main(["sweep", str(recipe), "--local", "--dir", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "not trained: it starts from point 0, which did not finish" in printed
    tuned = out / json.loads((out / "sweep.json").read_text())["points"][1]["dir"]
    assert not (tuned / "checkpoints").exists()


def test_dry_run_lists_which_points_wait_for_which(tmp_path, capsys):
    recipe = _recipe(tmp_path, PRE_THEN_TUNE)
    assert main(["sweep", str(recipe), "--dry-run", "--dir", str(tmp_path / "d")]) == 0
    err = capsys.readouterr().err
    assert "# point 1: 001_model.init=point-0_optim.lr=0.001 (starts from point 0: submitted " \
        "as a later array job with --dependency=afterok)" in err
    assert not (tmp_path / "d").exists()

"""Sweep recipes (a `sweep:` section in the YAML) and the concept labs in recipes/concepts/."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from trainlab.cli import main
from trainlab.config.load import build_config, read_recipe, read_sweep
from trainlab.engine.checks import check_config
from trainlab.errors import ConfigError
from trainlab.launch import sweep as sw

CONCEPTS = sorted((ROOT / "recipes" / "concepts").glob("*.yaml"))


def _recipe(tmp_path: Path, body: dict, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body))
    return path


# ----------------------------------------------------------------------- reading a recipe

def test_sweep_section_read_typed_and_kept_out_of_the_config(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("optim: {lr: 2.0e-3}\nsweep:\n  grid: {optim.lr: [1e-4, 1.0e-3], "
                    "model.widths: [[8, 16], [16]]}\n  points: [{train.epochs: 2}, "
                    "{train.epochs: 3}]\n  seeds: 2\n")
    rs = read_sweep(path)
    assert rs.grid == {"optim.lr": [1e-4, 1e-3], "model.widths": [[8, 16], [16]]}
    assert rs.points == [{"train.epochs": 2}, {"train.epochs": 3}] and rs.seeds == 2
    assert read_recipe(path) == {"optim.lr": 2.0e-3}  # the base config only
    assert build_config(path).optim.lr == 2e-3
    assert read_sweep(_recipe(tmp_path, {"optim": {"lr": 0.1}}, "plain.yaml")) is None


@pytest.mark.parametrize("sweep,message", [
    ({"gird": {"optim.lr": [1]}}, "unknown entry 'gird'. Did you mean: grid"),
    ({"grid": {"optim.lr": 0.1}}, "grid entry 'optim.lr' must be a non-empty list"),
    ({"grid": {"optim.lr": []}}, "must be a non-empty list"),
    ({"grid": {"optim.rl": [0.1]}}, "Unknown config key 'optim.rl'"),
    ({"grid": {"train.epochs": ["many"]}}, "'train.epochs'"),
    ({"grid": ["optim.lr"]}, "grid must map config keys"),
    ({"points": [{"optim.lr": 0.1}, {"train.epochs": 2}]}, "every point must set the same keys"),
    ({"points": {"optim.lr": 0.1}}, "points must be a list of mappings"),
    ({"grid": {"optim.lr": [0.1]}, "points": [{"optim.lr": 0.2}]}, "in both grid and points"),
    ({"grid": {"optim.lr": [0.1]}, "seeds": 0}, "seeds must be a whole number >= 1"),
    ({"grid": {"run.seed": [1, 2]}, "seeds": 2}, "both set seeds"),
    ({"seeds": 1}, "nothing to sweep"),
])
def test_bad_sweep_section_refused_naming_it(tmp_path, capsys, sweep, message):
    path = _recipe(tmp_path, {"sweep": sweep})
    with pytest.raises(ConfigError, match="sweep"):
        read_sweep(path)
    assert main(["sweep", str(path), "--local", "--dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainlab: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_unknown_top_level_section_still_refused(tmp_path, capsys):
    assert main(["config", "show", str(_recipe(tmp_path, {"sweeep": {"grid": {}}}))]) == 2
    assert "unknown top-level section 'sweeep'" in capsys.readouterr().err


# ----------------------------------------------------------------- merging with the flags

def _spec(tmp_path, body, overrides=(), grid=(), seeds=None):
    rs = read_sweep(_recipe(tmp_path, {"sweep": body}))
    return sw.spec_with_recipe(rs, list(overrides), list(grid), [], 0, seeds)


def test_flags_replace_and_add_to_the_recipe_grid(tmp_path):
    body = {"grid": {"optim.lr": [0.1, 0.01]}, "seeds": 2}
    spec = _spec(tmp_path, body, grid=["optim.lr=0.5", "train.epochs=2,3"])
    assert spec.grid == {"optim.lr": [0.5], "train.epochs": [2, 3]} and spec.seeds == 2
    assert _spec(tmp_path, body, seeds=1).seeds == 1  # --seeds wins when given
    points = sw.expand(_spec(tmp_path, {"points": [{"optim.lr": 0.1}, {"optim.lr": 0.2}],
                                        "grid": {"train.epochs": [2, 3]}}), base_seed=0)
    assert points == [{"optim.lr": 0.1, "train.epochs": 2}, {"optim.lr": 0.1, "train.epochs": 3},
                      {"optim.lr": 0.2, "train.epochs": 2}, {"optim.lr": 0.2, "train.epochs": 3}]


def test_override_of_a_swept_key_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"optim.lr is swept by the recipe.*--grid optim.lr="):
        _spec(tmp_path, {"grid": {"optim.lr": [0.1, 0.01]}}, overrides=["optim.lr=0.3"])
    with pytest.raises(ConfigError, match="given to --grid/--range"):
        _spec(tmp_path, {"points": [{"optim.lr": 0.1}]}, grid=["optim.lr=0.3"])


# ----------------------------------------------------------------------- the concept labs

@pytest.mark.parametrize("recipe", CONCEPTS, ids=lambda p: p.stem)
def test_concept_lab_plans_valid_points(recipe: Path, tmp_path):
    """Every lab is a sweep recipe whose base config and every point validate."""
    check_config(build_config(recipe))
    spec = sw.spec_with_recipe(read_sweep(recipe), [], [], [], 0, None)
    points, configs = sw.plan(str(recipe), [], spec, tmp_path / "s")
    assert len(points) >= 2 and len({p.dir for p in points}) == len(points)
    for cfg in configs:
        check_config(cfg)
        assert cfg.run.tensorboard is False and cfg.data.name == "digits"


def test_input_normalization_lab_end_to_end(tmp_path, capsys):
    """The lab runs as documented, shortened: 2 epochs, and the MLP only (`--grid` replaces
    the recipe's model.name values); compare ranks its points."""
    recipe = ROOT / "recipes" / "concepts" / "input_normalization.yaml"
    out = tmp_path / "lab"
    assert main(["sweep", str(recipe), "--local", "--dir", str(out), "--grid",
                 "model.name=mlp", "train.epochs=2", "run.progress=false", "run.threads=1"]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["varied"] == ["model.name", "data.normalize"]
    assert len(manifest["points"]) == 2 and "2 points, 2 done" in printed
    for p in manifest["points"]:
        run = out / p["dir"]
        data = json.loads((run / "data.json").read_text())
        raw = p["overrides"]["data.normalize"] == "none"
        assert (data["mean"] == [0.0] and data["std"] == [1.0]) == raw
        assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2
        assert 0 <= json.loads((run / "summary.json").read_text())["test_acc"] <= 1
    with (out / "compare.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["data.normalize"] for r in rows) == ["channel", "none"]


def test_train_on_a_sweep_recipe_trains_the_base_config(tmp_path, capsys):
    path = tmp_path / "lab.yaml"
    path.write_text("model: {name: mlp, hidden: [16]}\ntrain: {epochs: 1}\nsched: "
                    "{warmup_epochs: 0}\nsweep: {grid: {optim.lr: [0.1, 0.01]}}\n")
    run = tmp_path / "run"
    assert main(["train", str(path), f"run.dir={run}", "run.progress=false",
                 "run.tensorboard=false"]) == 0
    assert "has a sweep: section; `trainlab train` trains its base config" in \
        capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 2e-3

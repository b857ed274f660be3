"""Config layering, type coercion and the messages users see for bad keys and values."""

import pytest
import yaml

from trainlab.config.load import build_config, config_from_dict, dump_yaml, to_dict
from trainlab.config.schema import Config
from trainlab.config.validate import validate
from trainlab.errors import ConfigError


def test_defaults_recipe_overrides_layering(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: 0.01\n  name: sgd\ntrain:\n  epochs: 3\n")
    cfg = build_config(recipe, ["optim.lr=3e-4", "train.batch_size=32"])
    assert cfg.optim.lr == pytest.approx(3e-4)  # override beats recipe
    assert cfg.optim.name == "sgd"  # recipe beats default
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 32
    assert cfg.model.name == Config().model.name  # default kept


@pytest.mark.parametrize("override,key,value", [
    ("optim.lr=3e-4", ("optim", "lr"), 3e-4),
    ("optim.lr=1", ("optim", "lr"), 1.0),
    ("train.epochs=5.0", ("train", "epochs"), 5),
    ("data.augment=false", ("data", "augment"), False),
    ("data.flip=yes", ("data", "flip"), True),
    ("data.flip=null", ("data", "flip"), None),
    ("model.hidden=[64,32]", ("model", "hidden"), [64, 32]),
    ("model.hidden=128", ("model", "hidden"), [128]),
    ("model.hidden=64,32", ("model", "hidden"), [64, 32]),
    ("sched.warmup_epochs=0.5", ("sched", "warmup_epochs"), 0.5),
    ("run.resume=auto", ("run", "resume"), "auto"),
    ("run.dir=2024", ("run", "dir"), "2024"),
])
def test_override_types(override, key, value):
    cfg = build_config(None, [override])
    assert getattr(getattr(cfg, key[0]), key[1]) == value


def test_unknown_key_names_closest():
    with pytest.raises(ConfigError) as e:
        build_config(None, ["optim.learning_rate=0.1"])
    assert "optim.learning_rate" in str(e.value) and "optim." in str(e.value)
    with pytest.raises(ConfigError, match="optim.lr"):
        build_config(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match="optim.lr"):
        build_config(None, ["lr=0.1"])


def test_unknown_key_in_recipe_names_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as e:
        build_config(recipe)
    assert "train.epoch" in str(e.value) and str(recipe) in str(e.value)
    assert "train.epochs" in str(e.value)


@pytest.mark.parametrize("override,expect", [
    ("train.batch_size=abc", "train.batch_size"),
    ("train.epochs=2.5", "integer"),
    ("optim.lr=fast", "optim.lr"),
    ("data.augment=maybe", "true or false"),
])
def test_wrong_type(override, expect):
    with pytest.raises(ConfigError, match=expect):
        build_config(None, [override])


def test_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(tmp_path / "nope.yaml")


def test_malformed_override_and_recipe(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        build_config(None, ["optim.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(bad)


@pytest.mark.parametrize("override,expect", [
    ("train.batch_size=0", "train.batch_size must be a positive"),
    ("train.batch_size=-8", "train.batch_size"),
    ("model.name=resnet9000", "resnet18"),
    ("data.name=imagenet", "digits"),
    ("optim.name=lion", "adamw"),
    ("data.val_fraction=1.5", "data.val_fraction"),
])
def test_validate(override, expect):
    with pytest.raises(ConfigError, match=expect):
        validate(build_config(None, [override]))


def test_dump_round_trip():
    cfg = build_config(None, ["optim.lr=3e-4", "model.hidden=[8,4]", "data.flip=true"])
    again = config_from_dict(yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg
    assert to_dict(again)["optim"]["lr"] == pytest.approx(3e-4)


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.optim.lr = 1.0  # type: ignore[misc]

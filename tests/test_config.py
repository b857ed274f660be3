"""Config layering, type coercion and the messages users see for bad keys and values."""

import re

import pytest
import yaml

from trainlab.config.load import build_config, config_from_dict, dump_yaml, to_dict
from trainlab.config.schema import Config
from trainlab.config.validate import validate
from trainlab.engine.checks import check_config
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
    ("train.batch_size=0", r"^train.batch_size must be >= 1 \(got 0\); try train.batch_size=128"),
    ("train.batch_size=-8", r"^train.batch_size must be >= 1 \(got -8\)"),
    ("model.name=resnet9000", r"^Unknown model model.name='resnet9000'. Valid names: .*resnet18"),
    ("data.name=imagenet", r"^Unknown data set data.name='imagenet'. Valid names: .*digits"),
    ("method.name=byol", r"^Unknown method method.name='byol'. Valid names: .*simclr"),
    ("optim.name=lion", r"^optim.name must be one of: sgd, adam, adamw \(got 'lion'\)"),
    ("data.val_fraction=1.5", r"^data.val_fraction must be in \[0, 1\) \(got 1.5\)"),
    ("sched.min_lr_factor=-5", r"^sched.min_lr_factor must be in \[0, 1\] \(got -5\); 0 ends"),
])
def test_validate(override, expect):
    with pytest.raises(ConfigError, match=expect):
        check_config(build_config(None, [override]))


def test_validate_is_a_leaf_without_registry_names():
    """validate() checks ranges only; the registry names are check_config's."""
    validate(build_config(None, ["model.name=resnet9000"]))
    with pytest.raises(ConfigError, match="model.name"):
        check_config(build_config(None, ["model.name=resnet9000"]))


def _recipe_error(path) -> str:
    with pytest.raises(ConfigError) as e:
        build_config(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg and "Traceback" not in msg
    return msg


def test_recipe_not_utf8_folder_or_unreadable(tmp_path, monkeypatch):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("train:\n  epochs: 3  # caf\u00e9\n".encode("latin-1"))
    assert "not UTF-8" in _recipe_error(latin) and "0xe9" in _recipe_error(latin)
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    assert "is a folder" in _recipe_error(folder)
    locked = tmp_path / "locked.yaml"
    locked.write_text("train:\n  epochs: 3\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(locked), "read_bytes", denied)
    assert "Cannot read recipe file" in _recipe_error(locked)
    assert "Permission denied" in _recipe_error(locked)


@pytest.mark.parametrize("text,expect", [
    ("optimizer:\n  lr: 0.1\n", "unknown top-level section 'optimizer'. Did you mean: optim?"),
    ("lr: 0.1\n", "unknown top-level section 'lr'. Did you mean: optim.lr?"),
    ("optim: 3\n", "'optim' must be a section mapping keys to values"),
    ("optim:\n  lr: [1, 2]\n", "'optim.lr' .* got \\[1, 2\\], which is not a valid float"),
    ("train:\n  epochs: {a: 1}\n", "'train.epochs' .* which is not a valid int"),
    ("model:\n  hidden: [[1, 2]]\n", "'model.hidden' .* not a valid int"),
    ("run:\n  dir: [a, b]\n", "'run.dir' .* not a valid str"),
    ("- optim\n", "must be a mapping of sections"),
])
def test_recipe_shape_errors(tmp_path, text, expect):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    assert re.search(expect, _recipe_error(recipe))


def test_dump_round_trip():
    cfg = build_config(None, ["optim.lr=3e-4", "model.hidden=[8,4]", "data.flip=true"])
    again = config_from_dict(yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg
    assert to_dict(again)["optim"]["lr"] == pytest.approx(3e-4)


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.optim.lr = 1.0  # type: ignore[misc]

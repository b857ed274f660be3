"""Per-method defaults (`trainlab.config.method_defaults`): filled in only for keys the recipe
and command line left unset, printed in the run header, written into config.yaml, and kept
through resume and evaluation."""

from __future__ import annotations

import re
import typing

import pytest
import torch
import yaml
from conftest import ROOT, quick, stop_after_first_epoch

from trainlab.cli import main
from trainlab.config import method_defaults as md
from trainlab.config.load import build_config, coerce, config_from_dict, dump_yaml, to_dict
from trainlab.config.schema import SECTIONS, Config
from trainlab.engine.checkpoint import config_differences
from trainlab.engine.checks import check_config
from trainlab.engine.run import evaluate_run, train
from trainlab.engine.trainer import Interrupted
from trainlab.methods import method_names

TINY_VIT = ["model.name=vit_tiny", "model.depth=2", "model.dim=32", "model.heads=2",
            "model.patch_size=2"]
ENTRIES = [(m, d) for m, table in md.METHOD_DEFAULTS.items() for d in table]
IDS = [f"{m}:{d.key}" for m, d in ENTRIES]


def value(cfg: Config, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def schema_default(key: str):
    section, name = key.split(".")
    return getattr(SECTIONS[section](), name)


def raw(v) -> str:
    """`v` as a command-line value: false, 0.002, [0.9, 0.999], null."""
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("\n...")


def applied(cfg: Config) -> dict:
    return {a.key: a.value for a in cfg.method_defaults}


def test_every_registered_method_states_its_defaults():
    """A new method must say which defaults it uses (an empty row means the schema's)."""
    assert set(method_names()) == set(md.METHOD_DEFAULTS)


@pytest.mark.parametrize("method,d", ENTRIES, ids=IDS)
def test_table_values_have_the_keys_type(method, d):
    section, name = d.key.split(".")
    tp = typing.get_type_hints(SECTIONS[section])[name]
    assert coerce(d.value, tp, d.key, "test") == d.value
    assert type(coerce(d.value, tp, d.key, "test")) is type(d.value)
    assert d.why


@pytest.mark.parametrize("method", sorted(md.METHOD_DEFAULTS))
@pytest.mark.parametrize("extra", [[], ["train.epochs=1", "train.batch_size=1"]])
def test_each_methods_defaults_validate(method, extra):
    """Defaults alone never make a config invalid (e.g. a warmup longer than 1 epoch)."""
    cfg = build_config(None, [f"method.name={method}", *TINY_VIT, *extra])
    check_config(cfg)
    assert set(applied(cfg)) == {d.key for d in md.METHOD_DEFAULTS[method]}


def test_linear_probe_defaults_fill_unset_keys():
    cfg = build_config(None, ["method.name=linear_probe"])
    assert (cfg.data.augment, cfg.optim.lr, cfg.optim.weight_decay, cfg.sched.warmup_epochs,
            cfg.model.pool) == (False, 0.01, 0.0, 0.2, "mean")
    assert cfg.method_defaults_skipped == ()
    assert build_config(None, []).method_defaults == ()  # supervised: the schema's defaults
    assert Config().method_defaults == ()  # only build_config fills anything in


@pytest.mark.parametrize("method,d", ENTRIES, ids=IDS)
@pytest.mark.parametrize("where", ["command line", "recipe"])
def test_a_key_the_user_set_wins_even_at_the_schema_default(tmp_path, method, d, where):
    """Setting a key to the schema default is a choice: it stays, whatever the method's."""
    keep = schema_default(d.key)
    if where == "recipe":
        section, name = d.key.split(".")
        recipe = tmp_path / "r.yaml"
        body = {"method": {"name": method}}
        body.setdefault(section, {})[name] = keep
        recipe.write_text(yaml.safe_dump(body))
        cfg = build_config(recipe, TINY_VIT)
    else:
        cfg = build_config(None, [f"method.name={method}", *TINY_VIT, f"{d.key}={raw(keep)}"])
    assert value(cfg, d.key) == keep
    assert d.key not in applied(cfg)
    others = {e.key for e in md.METHOD_DEFAULTS[method]} - {d.key}
    if d.key not in md.AUGMENT_KEYS:  # the other defaults still apply
        assert set(applied(cfg)) == others


def test_an_augmentation_key_set_skips_the_augmentation_default():
    cfg = build_config(None, ["method.name=linear_probe", "data.flip=true"])
    assert cfg.data.augment is True and cfg.data.flip is True  # the flip the user asked for
    assert "data.augment" not in applied(cfg) and cfg.optim.lr == 0.01  # the rest applies
    (skip,) = cfg.method_defaults_skipped
    assert skip.keys == ("data.augment",) and "data.flip" in skip.because
    assert md.describe_skipped(cfg.method_defaults_skipped) == "data.augment (you set data.flip)"
    for key in md.AUGMENT_KEYS:  # every augmentation key, set to its schema default, counts
        cfg = build_config(None, ["method.name=linear_probe", f"{key}={raw(schema_default(key))}"])
        assert cfg.data.augment is True, key


def test_another_optimizer_skips_the_measured_optimizer_values():
    cfg = build_config(None, ["method.name=linear_probe", "optim.name=sgd"])
    schema = Config().optim
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (schema.lr, schema.weight_decay)
    assert cfg.data.augment is False and cfg.model.pool == "mean"  # non-optimizer defaults stay
    (skip,) = cfg.method_defaults_skipped
    assert skip.keys == ("optim.lr", "optim.weight_decay") and "adamw" in skip.because
    # naming the measured optimizer explicitly is not "another optimizer"
    assert build_config(None, ["method.name=linear_probe", "optim.name=adamw"]).optim.lr == 0.01


def test_config_yaml_form_holds_the_effective_values_and_names_the_defaults(tmp_path):
    cfg = build_config(None, ["method.name=mae", *TINY_VIT])
    text = dump_yaml(cfg)
    assert text.startswith("# method defaults (mae) for keys the recipe and command line left "
                           "unset: optim.lr=0.0015, optim.betas=[0.9, 0.95], ")
    again = config_from_dict(yaml.safe_load(text))
    assert to_dict(again) == to_dict(cfg) and again.optim.betas == [0.9, 0.95]
    assert set(yaml.safe_load(text)) == set(SECTIONS)  # the records are not config keys
    # read back as a recipe every key is set: nothing is filled in again, nothing changes
    (tmp_path / "config.yaml").write_text(text)
    again = build_config(tmp_path / "config.yaml")
    assert to_dict(again) == to_dict(cfg) and again.method_defaults == ()


def test_readme_table_lists_every_default():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Per-method defaults", 1)[1].split("\n## ", 1)[0]
    for m, d in ENTRIES:
        row = f"| `{m}` | `{d.key}` | `{md.shown(d.value)}` |"
        assert row in section, row
    for m in md.METHOD_DEFAULTS:  # methods without defaults say so too
        assert f"| `{m}` |" in section, m


# ------------------------------------------------------------------ runs (digits, tiny ViT)
@pytest.fixture(scope="module")
def mae_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("mae")
    train(build_config(None, quick(d, *TINY_VIT, "method.name=mae", "train.epochs=1",
                                   "train.batch_size=128", "method.decoder_depth=1",
                                   "method.decoder_dim=32", "method.decoder_heads=2")))
    return d


def test_probe_with_defaults_trains_and_prints_them(tmp_path, mae_run, capsys):
    """`trainlab train method.name=linear_probe model.init=RUN` with the defaults only."""
    rc = main(["train", *quick(tmp_path, *TINY_VIT, "method.name=linear_probe",
                               f"model.init={mae_run}", "train.epochs=2")])
    out = capsys.readouterr().out
    assert rc == 0
    assert ("derived: method defaults (linear_probe) for keys left unset: data.augment=false, "
            "optim.lr=0.01, optim.weight_decay=0, sched.warmup_epochs=0.2, model.pool=mean"
            in out)
    assert re.search(r"adamw peak lr 0\.01,", out)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (saved["data"]["augment"], saved["optim"]["lr"], saved["optim"]["weight_decay"],
            saved["model"]["pool"]) == (False, 0.01, 0.0, "mean")
    ck = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ck["config"]["optim"]["lr"] == 0.01 and ck["config"]["model"]["pool"] == "mean"


def test_a_run_with_method_defaults_resumes_and_evaluates_as_it_trained(tmp_path, mae_run,
                                                                        monkeypatch, capsys):
    over = quick(tmp_path, *TINY_VIT, "method.name=linear_probe", f"model.init={mae_run}",
                 "train.epochs=2")
    restore = stop_after_first_epoch(monkeypatch)
    with pytest.raises(Interrupted):
        train(build_config(None, over))
    restore()
    ck = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    # the same command resumes (the same defaults fill the same keys)...
    assert config_differences(ck["config"], build_config(None, over)) == []
    # ...a differing effective value is seen, though it equals the schema default
    assert any(d.startswith("optim.lr: saved 0.01, now 0.002")
               for d in config_differences(ck["config"], build_config(None,
                                                                      [*over, "optim.lr=2e-3"])))
    # resume from the run's own config.yaml: every key is set there, nothing is filled in
    cfg = build_config(tmp_path / "config.yaml", ["run.resume=auto"])
    assert cfg.method_defaults == () and config_differences(ck["config"], cfg) == []
    capsys.readouterr()
    s = train(cfg)
    out = capsys.readouterr().out
    assert "resumed from" in out and s["epochs"] == 2
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["optim"]["lr"] == 0.01
    assert evaluate_run(tmp_path)["acc"] == pytest.approx(s["test_acc"], abs=1e-9)

"""Every config key's range, checked the same way by `config show` and `train` before any data
is read; the README's config table agrees with the schema.

BAD lists, for every key of the schema, values that must be refused; NO_INVALID lists the keys
that have none, with the reason. A key added to the schema without an entry fails
`test_every_key_has_an_entry`, so the ranges and their tests cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing

import pytest
import yaml
from conftest import ROOT

from trainlab.cli import main
from trainlab.config.load import all_keys, coerce
from trainlab.config.schema import SECTIONS, Config

BIG = str(2**64)  # beyond 64 bits: refused by every int key

# key -> override sets that must be refused (a string is one override)
BAD: dict[str, list[str | list[str]]] = {
    "run.seed": ["-1", str(2**63)],
    "run.device": ["gpu", "cuda:x", "cuda:-1", "CUDA", "cpu:0", ""],
    "run.log_every": ["0", "-5"],
    "run.max_requeues": ["-1"],
    "run.dist_timeout_s": ["0", "-1"],
    "run.threads": ["0", "-2"],
    "data.name": ["imagenet"],
    "data.val_fraction": ["-0.1", "1", "1.5"],
    "data.test_fraction": ["0", "1", "-0.2"],
    "data.split_seed": ["-1", str(2**63)],
    "data.crop_padding": ["-1"],
    "data.rotate_deg": ["-1", "181"],
    "data.brightness": ["-0.1", "1"],
    "data.contrast": ["-0.1", "1"],
    "data.saturation": ["-0.1", "1"],
    "data.hue": ["-0.1", "0.6"],
    "data.normalize": ["mean", "null", "batch"],
    "data.labels_fraction": ["0", "1.01", "-0.5"],
    "data.coarse_labels": [["data.coarse_labels=true", "data.name=digits"]],
    "data.image_size": ["0", "-32"],
    "data.channels": ["2", "0", "4"],
    "data.in_memory_max_gb": ["-1"],
    "data.num_workers": ["-1"],
    "data.crop_scale": ["[0, 1]", "[0.9, 0.1]", "[0.5]", "[0.1, 0.5, 1]", "[0.5, 1.5]"],
    "data.auto_augment": ["autoaugment", "RandAugment"],
    "data.random_erasing": ["-0.1", "1.5"],
    "data.mixup_alpha": ["-1"],
    "data.cutmix_alpha": ["-0.5"],
    "data.mix_prob": ["-0.1", "1.1"],
    "data.mix_switch_prob": ["2", "-1"],
    "model.name": ["resnet9000"],
    "model.hidden": ["[512, 0]", "[-1]"],
    "model.widths": ["[]", "[32, 0]", "[-8]"],
    "model.stem_stride": ["0", "3"],
    "model.norm": ["instance", "BatchNorm", "null", ["model.name=vit_tiny", "model.norm=batch"],
                   ["model.name=vit_tiny", "model.norm=group"]],
    "model.dropout": ["-0.1", "1"],
    "model.image_size": ["0", "-8"],
    "model.patch_size": ["0", "-4"],
    "model.depth": ["0", "-1"],
    "model.dim": ["0", "-192"],
    "model.heads": ["0", ["model.dim=64", "model.heads=5"]],
    "model.mlp_ratio": ["0", "-1"],
    "model.pool": ["max"],
    "model.drop_path": ["2", "1", "-0.1"],
    "method.name": ["byol", ["method.name=mae", "model.name=cnn"],
                    ["method.name=dino", "model.name=resnet18"]],
    "method.mask_ratio": ["0", "1", "1.5", "-0.25"],
    "method.decoder_depth": ["0"],
    "method.decoder_dim": ["0", "130"],
    "method.decoder_heads": ["0", "3"],
    "method.temperature": ["0", "-0.2"],
    "method.proj_dim": ["0"],
    "method.proj_hidden": ["0"],
    "method.out_dim": ["0", "-1024"],
    "method.teacher_temp": ["0", "-0.04"],
    "method.warmup_teacher_temp": ["0", "-0.04"],
    "method.warmup_teacher_temp_epochs": ["-1", ["method.warmup_teacher_temp_epochs=13",
                                                 "train.epochs=12"]],
    "method.student_temp": ["0", "-0.1"],
    "method.center_momentum": ["1", "-0.1", "1.5"],
    "method.teacher_momentum": ["1", "-0.5", "2"],
    "method.local_crops": ["-1"],
    "method.global_crop_scale": ["[0, 1]", "[0.9, 0.4]", "[0.4]", "[0.4, 1.5]"],
    "method.local_crop_scale": ["[0, 0.4]", "[0.4, 0.05]", "[0.05, 0.2, 0.4]", "[-0.1, 0.4]"],
    "method.local_crop_size": ["0", "-12"],
    "method.knn_k": ["0", "-20"],
    "method.knn_temperature": ["0", "-0.07"],
    "method.knn_every": ["-1"],
    "optim.name": ["lion"],
    "optim.lr": ["0", "-1e-3"],
    "optim.weight_decay": ["-0.01"],
    "optim.momentum": ["-0.9", "1", "1.5"],
    "optim.nesterov": [["optim.nesterov=true", "optim.name=adamw"],
                       ["optim.nesterov=true", "optim.name=sgd", "optim.momentum=0"]],
    "optim.betas": ["[0.9]", "[0.9, 1.0]", "[-0.1, 0.999]", "[0.9, 0.99, 0.9]"],
    "optim.eps": ["0", "-1e-8"],
    "optim.layer_decay": ["0", "1.5"],
    "sched.name": ["linear"],
    "sched.warmup_epochs": ["-1", ["sched.warmup_epochs=13", "train.epochs=12"]],
    "sched.warmup_start_factor": ["-1", "1.5"],
    "sched.min_lr_factor": ["-5", "1.5"],
    "sched.milestones": ["[0]", "[-0.5]", ["sched.milestones=[0.5, 12]", "train.epochs=12"],
                         ["sched.milestones=[30]", "train.epochs=12"]],
    "sched.gamma": ["-1", "0", "1.5"],
    "train.epochs": ["0", "-3"],
    "train.batch_size": ["0", "-8"],
    "train.accum_steps": ["0"],
    "train.label_smoothing": ["-0.1", "1"],
    "train.loss": ["l2", "MSE", ["method.name=simclr", "train.loss=mse"]],
    "train.tta": ["mirror", "FLIP", ["train.tta=flip"],
                  ["method.name=mae", "model.name=vit_tiny", "train.tta=flip", "data.flip=true"]],
    "train.grad_clip": ["-1"],
    "train.eval_batch_size": ["0"],
    "train.precision": ["fp8", "FP16"],
    "train.ema_decay": ["1", "-0.5", ["method.name=simclr", "train.ema_decay=0.99"],
                        ["method.name=dino", "model.name=vit_tiny", "train.ema_decay=0.99"]],
}

_SWITCH = "a bool: true and false are both valid"
_PATH = "a free path or name, checked where it is used (e.g. a missing folder is a DataError)"
NO_INVALID: dict[str, str] = {
    "run.dir": _PATH,
    "run.resume": "a checkpoint path, run folder or auto; checked when the run starts",
    "run.overwrite": _SWITCH,
    "run.report": _SWITCH,
    "run.progress": _SWITCH,
    "run.tensorboard": _SWITCH,
    "data.root": _PATH,
    "data.augment": _SWITCH,
    "data.flip": _SWITCH + " (or null)",
    "data.download": _SWITCH,
    "data.skip_bad_files": _SWITCH,
    "data.cache_dir": _PATH,
    "data.in_memory": _SWITCH + " (or null)",
    "model.init": _PATH,
    "method.norm_pix_loss": _SWITCH,
    "method.head_bn": _SWITCH,
    "train.channels_last": _SWITCH,
    "train.compile": _SWITCH,
    "train.sync_bn": _SWITCH,
    "train.tf32": _SWITCH,
}

# valid edge values: accepted by `config show`, and `train` gets as far as reading data
BOUNDARY = [
    ["sched.min_lr_factor=0"], ["sched.min_lr_factor=1"], ["data.val_fraction=0"],
    ["sched.warmup_start_factor=1"], ["sched.warmup_epochs=0"],
    ["sched.warmup_epochs=12", "train.epochs=12"], ["sched.milestones=[0.5, 11]"],
    ["sched.gamma=1"], ["optim.momentum=0"], ["optim.betas=[0, 0.999]"], ["optim.layer_decay=1"],
    [f"run.seed={2**63 - 1}"], ["data.split_seed=0"], ["data.crop_scale=[1, 1]"],
    ["data.labels_fraction=1"], ["data.rotate_deg=180"], ["data.random_erasing=1"],
    ["model.hidden=[]"], ["model.drop_path=0"], ["data.channels=3"], ["model.stem_stride=2"],
    ["method.mask_ratio=0.01"], ["train.ema_decay=0.9999"], ["data.image_size=null"],
    ["optim.nesterov=true", "optim.name=sgd"], ["data.coarse_labels=true", "data.name=cifar100"],
    ["run.device=cpu"], ["data.num_workers=0"], ["data.in_memory_max_gb=0"],
    ["method.name=mae", "model.name=vit_tiny"], ["method.name=simclr", "model.name=cnn"],
    ["model.norm=none"], ["model.name=vit_tiny", "model.norm=none"], ["model.norm=group"],
    ["model.name=mlp", "model.norm=batch"], ["data.hue=0.5"], ["data.normalize=none"],
    ["train.loss=mse", "method.name=finetune"],
    ["method.name=dino", "model.name=vit_tiny", "method.local_crops=0"],
    ["method.warmup_teacher_temp_epochs=12", "train.epochs=12"],
]
DEVICES_OK = ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"]


def _types() -> dict[str, typing.Any]:
    return {f"{s}.{k}": t for s, cls in SECTIONS.items()
            for k, t in typing.get_type_hints(cls).items()}


def _base(tp: typing.Any) -> tuple[type, bool]:
    """(element type, is_list) of a schema annotation: `list[float] | None` -> (float, True)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = args[0]
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0], True
    return tp, False


def _cases() -> list[tuple[str, list[str]]]:
    """(key, overrides) for every refused value: the table, plus nan/inf for every float key
    and a beyond-64-bit value for every int key (no key accepts them)."""
    hints = _types()
    out = []
    for key, values in BAD.items():
        for v in values:
            out.append((key, v if isinstance(v, list) else [f"{key}={v}"]))
    for key in all_keys():
        base, is_list = _base(hints[key])
        extra = (["nan", "inf", "-inf"] if base is float else [BIG] if base is int else [])
        for v in extra:
            out.append((key, [f"{key}=[{v}, {v}]" if is_list else f"{key}={v}"]))
    return out


CASES = _cases()


def test_every_key_has_an_entry():
    keys = set(all_keys())
    missing = sorted(keys - set(BAD) - set(NO_INVALID))
    assert not missing, f"add refused values to BAD (or a reason to NO_INVALID) for {missing}"
    assert not sorted(set(BAD) & set(NO_INVALID))
    assert not sorted((set(BAD) | set(NO_INVALID)) - keys), "stale keys in the tables"
    for key in NO_INVALID:  # only bools and free strings can have no invalid value
        assert _base(_types()[key])[0] in (bool, str), key


@pytest.fixture
def no_data(monkeypatch):
    """Reading any data set fails the test: every module's `load_data` and every registered
    data set's loader raise AssertionError."""
    from trainlab.data.sources import SOURCES

    def forbidden(*a, **k):
        raise AssertionError("data read")

    for name, mod in list(sys.modules.items()):
        if name.startswith("trainlab") and hasattr(mod, "load_data"):
            monkeypatch.setattr(mod, "load_data", forbidden)
    for name, src in SOURCES.items():
        monkeypatch.setitem(SOURCES, name, dataclasses.replace(src, load=forbidden))


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("key,overrides", CASES, ids=[" ".join(o) for _, o in CASES])
def test_out_of_range_refused_by_show_and_train(key, overrides, tmp_path, capsys, no_data):
    rc, err = _run(capsys, ["config", "show", *overrides])
    assert rc == 2, f"config show accepted {overrides}"
    assert err.startswith("trainlab: error: ") and key in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err  # one paragraph
    run_dir = tmp_path / "run"
    rc, err_train = _run(capsys, ["train", *overrides, f"run.dir={run_dir}"])
    assert rc == 2 and err_train == err  # the same check, the same message
    assert not run_dir.exists()


@pytest.mark.parametrize("overrides", BOUNDARY, ids=[" ".join(o) for o in BOUNDARY])
def test_boundary_values_accepted(overrides, tmp_path, capsys, no_data):
    rc, err = _run(capsys, ["config", "show", *overrides])
    assert rc == 0, err
    with pytest.raises(AssertionError, match="data read"):  # past every config check
        main(["train", *overrides, f"run.dir={tmp_path / 'run'}"])


@pytest.mark.parametrize("device", DEVICES_OK)
def test_device_pattern_accepts(device, capsys):
    assert main(["config", "show", f"run.device={device}"]) == 0


def test_message_names_value_range_and_suggestion(capsys, no_data):
    rc, err = _run(capsys, ["config", "show", "sched.min_lr_factor=-5"])
    assert err == ("trainlab: error: sched.min_lr_factor must be in [0, 1] (got -5); 0 ends the "
                   "cosine at zero.\n")
    rc, err = _run(capsys, ["config", "show", "optim.lr=inf"])
    assert err.startswith("trainlab: error: optim.lr must be a finite number > 0 (got inf); try")
    rc, err = _run(capsys, ["config", "show", "model.name=resnet9000"])
    assert "model.name='resnet9000'" in err and "resnet18" in err and "vit_tiny" in err


# ------------------------------------------------------------------ README config table

def _readme_rows() -> list[tuple[list[str], str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Config\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and line.startswith("| `"):
            rows.append((re.findall(r"`([a-z_]+\.[a-z_0-9]+)`", cells[0]), cells[1]))
    return rows


def test_readme_table_matches_schema():
    rows = _readme_rows()
    documented = [k for keys, _ in rows for k in keys]
    assert sorted(set(documented) - set(all_keys())) == [], "README documents unknown keys"
    assert sorted(set(all_keys()) - set(documented)) == [], "keys missing from the README"
    assert len(documented) == len(set(documented)), "a key is documented twice"
    hints, default = _types(), Config()
    for keys, cell in rows:
        literals = re.findall(r"`([^`]*)`", cell)
        if re.fullmatch(r"(`[^`]*`)(, `[^`]*`)*", cell) is None:  # words: derived, so null
            for k in keys:
                s, n = k.split(".")
                assert getattr(getattr(default, s), n) is None, (k, cell)
            continue
        if len(literals) == 1:
            literals = literals * len(keys)
        assert len(literals) == len(keys), (keys, cell)
        for k, lit in zip(keys, literals, strict=True):
            s, n = k.split(".")
            value = coerce(yaml.safe_load(lit), hints[k], k, "README")
            assert value == getattr(getattr(default, s), n), (k, lit)

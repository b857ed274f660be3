"""Concept switches: model.norm, data.normalize, train.loss=mse, colour augmentation.

Unit checks by hand (layer types, MSE against soft targets, colour ops on pure colours, raw
pixel range), then each new option trains on UCI digits to >= 95% test accuracy in the default
12 epochs (real runs, marked slow).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import quick
from torch import nn

from trainlab.cli import main
from trainlab.config.load import build_config
from trainlab.config.schema import DataConfig, ModelConfig
from trainlab.data.augment import (
    AugmentSpec,
    adjust_hue,
    adjust_saturation,
    apply_augment,
    neutral_params,
    sample_params,
)
from trainlab.data.pipeline import load_bundle
from trainlab.errors import ConfigError
from trainlab.methods.supervised import Supervised, mse_loss
from trainlab.models import ImageSpec, build_model
from trainlab.models.norm import group_count

DIGITS = ImageSpec(channels=1, height=8, width=8, num_classes=10)
NORM_TYPES = {"batch": (nn.BatchNorm1d, nn.BatchNorm2d), "layer": (nn.LayerNorm, nn.GroupNorm),
              "group": (nn.GroupNorm,)}
ALL_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, ALL_NORMS)]


# ------------------------------------------------------------------------------ model.norm

def test_group_count_divides_and_leaves_four_channels() -> None:
    assert [group_count(c) for c in (32, 64, 128, 512, 96, 6, 1)] == [8, 16, 32, 32, 24, 1, 1]
    for c in range(1, 600):
        g = group_count(c)
        assert c % g == 0 and g <= 32 and (g == 1 or c // g >= 4)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18"])
@pytest.mark.parametrize("norm", ["batch", "layer", "group", "none"])
def test_norm_layer_types(name: str, norm: str) -> None:
    spec = ImageSpec(3, 16, 16, 10) if name == "resnet18" else DIGITS
    model = build_model(ModelConfig(name=name, norm=norm, hidden=[64, 32]), spec)
    found = _norms(model)
    if norm == "none":
        assert found == []
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert all(c.bias is not None for c in convs) or name == "resnet18"
    else:
        assert found and all(isinstance(m, NORM_TYPES[norm]) for m in found), found
        if norm == "layer":  # GroupNorm over all channels of a map, LayerNorm of a vector
            assert all(m.num_groups == 1 for m in found if isinstance(m, nn.GroupNorm))
        if norm == "group":
            assert all(m.num_groups == group_count(m.num_channels) > 1 for m in found)
    x = torch.rand(4, spec.channels, spec.height, spec.width)
    assert model(x).shape == (4, 10)  # builds and runs (train mode: batch statistics too)


def test_norm_none_is_a_value_not_null(tmp_path) -> None:
    """`none` must reach the model as "none" from overrides and recipes alike."""
    assert build_config(None, ["model.norm=none"]).model.norm == "none"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {norm: none}\n")
    assert build_config(recipe).model.norm == "none"
    assert build_config(None, []).model.norm == "auto"


def test_norm_defaults_are_the_models_own() -> None:
    assert _norms(build_model(ModelConfig(name="mlp"), DIGITS)) == []
    assert all(isinstance(m, nn.BatchNorm2d) for m in
               _norms(build_model(ModelConfig(name="cnn"), DIGITS)))
    vit = ModelConfig(name="vit_tiny", patch_size=2, dim=32, depth=2, heads=2)
    assert all(isinstance(m, nn.LayerNorm) for m in _norms(build_model(vit, DIGITS)))
    assert _norms(build_model(ModelConfig(**{**vit.__dict__, "norm": "none"}), DIGITS)) == []


def test_vit_refuses_batch_and_group_norm_naming_the_key(capsys) -> None:
    for norm in ("batch", "group"):
        assert main(["config", "show", "model.name=vit_small", f"model.norm={norm}"]) == 2
        err = capsys.readouterr().err
        assert f"model.norm={norm}" in err and "vit_small" in err and "layer, none" in err


# ------------------------------------------------------------------------------ train.loss

def test_mse_against_soft_targets_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0]])  # e.g. a mixup row, a one-hot row
    by_hand = ((2 - .7) ** 2 + (0 - .3) ** 2 + 1 + .25 + .25 + 1) / 6
    assert mse_loss(logits, soft).item() == pytest.approx(by_hand)
    eps = 0.3  # smoothing: target * (1 - eps) + eps / K
    t = soft * (1 - eps) + eps / 3
    assert mse_loss(logits, soft, eps).item() == pytest.approx(((logits - t) ** 2).mean().item())
    ids = torch.tensor([0, 2])
    assert mse_loss(logits, ids).item() == pytest.approx(
        ((logits - F.one_hot(ids, 3).float()) ** 2).mean().item())


def test_supervised_mse_names_its_loss() -> None:
    method = Supervised(nn.Flatten(), loss="mse")  # the "model" passes logits through
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], requires_grad=True)
    out = method((logits, torch.tensor([0, 1])))
    assert set(out) == {"loss", "acc", "mse"} and out["mse"] == out["loss"]
    out["loss"].backward()
    assert logits.grad is not None
    ev = Supervised(nn.Flatten()).evaluate((logits.detach(), torch.tensor([0, 1])))
    assert ev["ce"] == ev["loss"] and "mse" not in ev


# ---------------------------------------------------------------------------- colour ops

def test_saturation_zero_makes_grey_and_one_keeps() -> None:
    x = torch.rand(3, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    grey = adjust_saturation(x.clone(), torch.zeros(3))
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(grey[:, c], luma)
    assert torch.equal(adjust_saturation(x.clone(), torch.ones(3)), x)


def test_hue_third_turn_permutes_pure_colours() -> None:
    pure = torch.eye(3).view(3, 3, 1, 1).expand(3, 3, 2, 2).clone()  # red, green, blue images
    shifted = adjust_hue(pure, torch.full((3,), 1 / 3))
    torch.testing.assert_close(shifted, pure.roll(1, dims=1), atol=1e-5, rtol=0)  # r->g->b->r
    torch.testing.assert_close(adjust_hue(pure, torch.full((3,), -1 / 3)),
                               pure.roll(-1, dims=1), atol=1e-5, rtol=0)
    x = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(adjust_hue(x, torch.zeros(4)), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(adjust_hue(x, torch.ones(4)), x, atol=1e-5, rtol=0)  # full turn


def test_hue_matches_torchvision() -> None:
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(3, 3, 7, 7, generator=torch.Generator().manual_seed(2))
    shifts = [0.1, -0.25, 0.5]
    ours = adjust_hue(x, torch.tensor(shifts))
    ref = torch.stack([TF.adjust_hue(img, s) for img, s in zip(x, shifts, strict=True)])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_colour_params_leave_earlier_columns_alone() -> None:
    plain = AugmentSpec(2, True, 10.0, 0.2, 0.2)
    colour = AugmentSpec(2, True, 10.0, 0.2, 0.2, saturation=0.4, hue=0.1)
    a = sample_params(plain, 500, torch.Generator().manual_seed(3))
    b = sample_params(colour, 500, torch.Generator().manual_seed(3))
    assert torch.equal(a[:, :6], b[:, :6])
    assert torch.equal(a[:, 6:], neutral_params(500)[:, 6:])
    assert (b[:, 6] - 1).abs().max() <= 0.4 and (b[:, 6] - 1).abs().max() > 0.3
    assert b[:, 7].abs().max() <= 0.1 and b[:, 7].abs().max() > 0.08


def test_colour_ops_skip_grey_images() -> None:
    x = torch.rand(4, 1, 5, 5)
    params = neutral_params(4)
    params[:, 6], params[:, 7] = 0.0, 0.3
    assert torch.equal(apply_augment(x, params), x)


def _red_npz(tmp_path) -> str:
    x = np.zeros((40, 8, 8, 3), np.uint8)
    x[..., 0] = 200  # pure red images
    y = np.arange(40) % 2
    path = tmp_path / "red.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    return str(path)


def test_training_loader_applies_hue_and_saturation(tmp_path) -> None:
    """What `data preview-augment` draws: the training loader's batches, un-normalized."""
    root = _red_npz(tmp_path)
    cfg = DataConfig(name="npz", root=root, hue=0.5, saturation=0.5, val_fraction=0.1)
    bundle = load_bundle(cfg, torch.device("cpu"))
    xb = next(iter(bundle.train_loader(16, seed=0, subset=list(range(16))).epoch(0)))[0]
    x = xb * torch.tensor(bundle.std).view(1, 3, 1, 1) + torch.tensor(bundle.mean).view(1, 3, 1, 1)
    dominant = x.mean(dim=(2, 3)).argmax(dim=1)  # [16] the strongest channel per image
    assert set(dominant.tolist()) > {0}, "hue shifts of up to half a turn leave pure red"
    out = tmp_path / "preview.png"
    assert main(["data", "preview-augment", "data.name=npz", f"data.root={root}",
                 "data.hue=0.5", "data.saturation=0.5", "--out", str(out)]) == 0
    assert out.stat().st_size > 0


def test_colour_on_grey_data_refused(capsys) -> None:
    with pytest.raises(ConfigError, match=r"data.saturation=0.3 needs colour.*data.channels=3"):
        load_bundle(DataConfig(saturation=0.3), torch.device("cpu"))
    with pytest.raises(ConfigError, match="data.hue=0.1"):
        load_bundle(DataConfig(hue=0.1), torch.device("cpu"))
    load_bundle(DataConfig(hue=0.1, augment=False), torch.device("cpu"))  # off: nothing to refuse
    load_bundle(DataConfig(hue=0.1, channels=3), torch.device("cpu"))  # grey -> RGB first


# ------------------------------------------------------------------------ data.normalize

def test_normalize_none_feeds_raw_pixels() -> None:
    raw = load_bundle(DataConfig(normalize="none", augment=False), torch.device("cpu"))
    assert raw.mean == [0.0] and raw.std == [1.0]
    xs = torch.cat([b[0] for b in raw.loader("train", 256).epoch(0)])
    assert xs.min() >= 0 and xs.max() <= 1 and xs.max() == 1.0
    chan = load_bundle(DataConfig(augment=False), torch.device("cpu"))
    xc = torch.cat([b[0] for b in chan.loader("train", 256).epoch(0)])
    assert abs(xc.mean()) < 1e-3 and abs(xc.std() - 1) < 1e-2 and xc.min() < 0


def test_normalize_none_is_saved_and_reused_by_eval(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", *quick(run, "model.name=mlp", "train.epochs=1", "sched.warmup_epochs=0",
                                 "data.normalize=none")]) == 0
    data = json.loads((run / "data.json").read_text())
    assert data["mean"] == [0.0] and data["std"] == [1.0]
    summary = json.loads((run / "summary.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert f"{summary['test_acc']:.4f}" in capsys.readouterr().out


# -------------------------------------------------------------- each option trains to 95%

TRAINS = [
    ["model.norm=layer"], ["model.norm=group"], ["model.norm=none"],
    ["model.name=mlp", "model.norm=batch"], ["model.name=mlp", "model.norm=layer"],
    ["model.name=mlp", "model.norm=group"], ["train.loss=mse"], ["data.normalize=none"],
]  # (the plain MLP, norm none, ends near 0.93 in 12 epochs with or without these switches)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", TRAINS, ids=[" ".join(o) for o in TRAINS])
def test_option_trains_digits_to_95(overrides, tmp_path) -> None:
    cfg = build_config(None, overrides)
    assert cfg.train.epochs == 12  # the default length
    assert main(["train", *quick(tmp_path, "run.threads=1", *overrides)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test_acc"] >= 0.95, summary["test_acc"]
    metric = "mse" if "train.loss=mse" in overrides else "ce"
    epochs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in epochs if r.get("kind") == "epoch"][-1]
    assert last[f"train_{metric}"] == last["train_loss"] and f"val_{metric}" in last


def test_flip_tta_averages_the_logits_of_each_image_and_its_mirror():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 4, 5))
    x = torch.randn(6, 2, 3, 4)
    y = torch.randint(0, 5, (6,))
    plain = Supervised(model).evaluate((x, y))
    tta = Supervised(model, tta="flip").evaluate((x, y))
    mean = (model(x) + model(x.flip(-1))) / 2
    assert torch.allclose(tta["loss"], F.cross_entropy(mean, y))
    assert torch.allclose(tta["acc"], (mean.argmax(1) == y).float().mean())
    assert not torch.allclose(plain["loss"], tta["loss"])  # the mirror changes the logits


def test_flip_tta_refused_where_it_cannot_mean_anything(capsys) -> None:
    assert main(["config", "show", "train.tta=flip"]) == 2  # digits: no flips by default
    err = capsys.readouterr().err
    assert "train.tta=flip" in err and "data.flip=true" in err and "Traceback" not in err
    assert main(["config", "show", "train.tta=flip", "data.flip=true", "data.augment=false"]) == 2
    err = capsys.readouterr().err  # the advice names the switch that turned flips off
    assert "(data.augment=false turns all augmentation off)" in err
    assert "data.augment=true data.flip=true." in err
    assert main(["config", "show", "train.tta=flip", "method.name=simclr"]) == 2
    assert "pretrains without labels" in capsys.readouterr().err
    assert main(["config", "show", "train.tta=flip", "data.flip=true"]) == 0
    assert main(["config", "show", "train.tta=mirror"]) == 2
    assert "train.tta" in capsys.readouterr().err

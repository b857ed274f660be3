"""Batched augmentation: parameter sampling, exactness of crop/flip, rotation, photometric ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainlab.config.schema import Config, DataConfig
from trainlab.config.validate import validate
from trainlab.data import (
    PARAM_COLUMNS,
    AugmentSpec,
    apply_augment,
    neutral_params,
    resolve_augment,
    sample_params,
)
from trainlab.data.augment import _affine_theta, affine_grid
from trainlab.errors import ConfigError

FULL = AugmentSpec(crop_padding=2, flip=True, rotate_deg=15.0, brightness=0.3, contrast=0.3)
CROP_FLIP = AugmentSpec(crop_padding=3, flip=True, rotate_deg=0.0, brightness=0.0, contrast=0.0)
OFF = AugmentSpec(crop_padding=0, flip=False, rotate_deg=0.0, brightness=0.0, contrast=0.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int, h: int = 28, w: int = 28, seed: int = 0) -> torch.Tensor:
    """Random float images in [0, 1], [n, 1, h, w], on a uint8 grid like real data."""
    return torch.randint(0, 256, (n, 1, h, w), generator=_gen(seed)).float() / 255


def _crop_flip_reference(x: torch.Tensor, params: torch.Tensor, pad: int) -> torch.Tensor:
    """torchvision RandomCrop(padding=pad) then RandomHorizontalFlip, one sample at a time."""
    padded = F.pad(x, (pad, pad, pad, pad))  # zeros
    h, w = x.shape[2:]
    out = []
    for img, (dx, dy, flip) in zip(padded, params[:, :3].tolist(), strict=True):
        top, left = pad + int(dy), pad + int(dx)
        crop = img[:, top:top + h, left:left + w]
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out)


# ------------------------------------------------------------------------------ parameters


def test_params_layout_and_ranges():
    p = sample_params(FULL, 4096, _gen(0))
    assert p.shape == (4096, len(PARAM_COLUMNS)) and p.dtype == torch.float32
    dx, dy, flip, angle, bright, contrast, saturation, hue = p.unbind(1)
    for shift in (dx, dy):
        assert torch.equal(shift, shift.round()) and set(shift.unique().tolist()) == {
            -2.0, -1.0, 0.0, 1.0, 2.0}
    assert set(flip.unique().tolist()) == {0.0, 1.0}
    assert angle.abs().max() <= 15 and angle.std() > 5
    assert (bright - 1).abs().max() <= 0.3 and (contrast - 1).abs().max() <= 0.3
    assert torch.equal(saturation, torch.ones(4096)) and torch.equal(hue, torch.zeros(4096))


def test_params_differ_per_sample_and_repeat_per_seed():
    a = sample_params(FULL, 64, _gen(7))
    b = sample_params(FULL, 64, _gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_params(FULL, 64, _gen(8)))
    assert a[:, 3].unique().numel() == 64  # continuous columns: all distinct
    x = _images(1).expand(64, -1, -1, -1)  # one image, 64 times
    out = apply_augment(x, a)
    assert torch.equal(out, apply_augment(x, b))
    flat = out.reshape(64, -1)
    assert torch.unique(flat, dim=0).shape[0] == 64  # every copy augmented differently


def test_off_ops_are_neutral_and_do_not_shift_other_columns():
    off = sample_params(OFF, 100, _gen(1))
    assert torch.equal(off, neutral_params(100))
    assert (off[:, 3] == 0).all() and not torch.signbit(off[:, 3]).any()  # no -0.0
    crop_only = AugmentSpec(2, False, 0.0, 0.0, 0.0)
    with_rot = AugmentSpec(2, False, 30.0, 0.0, 0.0)
    assert torch.equal(sample_params(crop_only, 100, _gen(1))[:, :2],
                       sample_params(with_rot, 100, _gen(1))[:, :2])


# -------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("hw", [(28, 28), (5, 7)], ids=["28x28", "5x7"])
@pytest.mark.parametrize("pass_spec", [True, False], ids=["spec", "no-spec"])
def test_integer_crop_flip_is_bit_exact(hw, pass_spec):
    x = _images(48, *hw, seed=3)
    params = sample_params(CROP_FLIP, 48, _gen(4))
    out = apply_augment(x, params, CROP_FLIP if pass_spec else None)
    assert torch.equal(out, _crop_flip_reference(x, params, pad=3))


def test_augment_off_returns_input_exactly():
    x = _images(16)
    spec = resolve_augment(DataConfig(name="fashion-mnist", augment=False))
    assert spec == OFF and not spec.enabled
    params = sample_params(spec, 16, _gen(0))
    assert torch.equal(apply_augment(x, params, spec), x)
    assert torch.equal(apply_augment(x, params), x)


def test_rotation_by_zero_is_identity():
    x = _images(8)
    params = neutral_params(8)
    assert torch.equal(apply_augment(x, params), x)  # nothing on: grid_sample skipped
    rot_spec = AugmentSpec(0, False, 10.0, 0.0, 0.0)  # forces the bilinear path
    torch.testing.assert_close(apply_augment(x, params, rot_spec), x, atol=1e-5, rtol=0)


def test_rotation_direction_and_aspect():
    x = _images(3, 6, 6)
    params = neutral_params(3)
    params[:, 3] = 90.0
    torch.testing.assert_close(apply_augment(x, params), torch.rot90(x, 1, dims=(2, 3)),
                               atol=1e-5, rtol=0)
    x = _images(3, 5, 7)  # non-square: rotation must be in pixel units, not normalized ones
    params[:, 3] = 180.0
    torch.testing.assert_close(apply_augment(x, params), x.flip(2, 3), atol=1e-5, rtol=0)
    params[:, 3] = 90.0  # the central 5x5 square maps onto itself
    torch.testing.assert_close(apply_augment(x, params)[..., 1:6],
                               torch.rot90(x[..., 1:6], 1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_grid_matches_torch_affine_grid():
    theta = _affine_theta(sample_params(FULL, 32, _gen(2)), 9, 13)
    ref = F.affine_grid(theta, [32, 1, 9, 13], align_corners=False)
    torch.testing.assert_close(affine_grid(theta, 9, 13), ref, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- photometric


def test_brightness_and_contrast_formulas():
    x = _images(2, 4, 4) * 0.5  # in [0, 0.5]: brightness 1.5 cannot clip
    params = neutral_params(2)
    params[:, 4] = torch.tensor([1.5, 0.5])
    torch.testing.assert_close(apply_augment(x, params), x * params[:, 4].view(2, 1, 1, 1))
    params = neutral_params(2)
    params[:, 5] = torch.tensor([0.0, 0.5])
    out = apply_augment(x, params)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(out[0], mean[0].expand_as(x[0]))  # contrast 0 -> flat grey
    torch.testing.assert_close(out[1], 0.5 * x[1] + 0.5 * mean[1])
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), mean.flatten())


def test_values_stay_in_unit_range():
    strong = AugmentSpec(4, True, 45.0, 0.9, 0.9)
    out = apply_augment(_images(256), sample_params(strong, 256, _gen(5)), strong)
    assert out.min() >= 0 and out.max() <= 1
    assert (out == 1).any()  # brightness up to 1.9 must clip somewhere


def test_bad_params_shape_is_value_error():
    with pytest.raises(ValueError, match="params"):
        apply_augment(_images(4), neutral_params(3))


# --------------------------------------------------------------------------- spec from config


def test_resolve_defaults_and_overrides():
    digits = resolve_augment(DataConfig(name="digits"))
    assert digits == AugmentSpec(1, False, 10.0, 0.2, 0.2) and digits.enabled
    fashion = resolve_augment(DataConfig(name="fashion-mnist"))
    assert fashion == AugmentSpec(2, True, 0.0, 0.0, 0.0)
    assert resolve_augment(DataConfig(name="digits", flip=True)).flip
    over = resolve_augment(DataConfig(name="fashion-mnist", crop_padding=0, rotate_deg=5.0))
    assert over.crop_padding == 0 and over.rotate_deg == 5.0 and over.flip
    assert not resolve_augment(DataConfig(name="digits", augment=False)).enabled


@pytest.mark.parametrize(
    "key,value",
    [("crop_padding", -1), ("rotate_deg", 181.0), ("rotate_deg", -1.0), ("brightness", 1.0),
     ("contrast", -0.1)],
)
def test_invalid_ranges_are_config_errors(key, value):
    """Checked once, by the schema rules (resolve_augment trusts a validated config)."""
    with pytest.raises(ConfigError, match=f"^data.{key} must be "):
        validate(Config(data=DataConfig(name="digits", **{key: value})))

"""Model registry and model contracts: every registered model trains one step on grey and RGB."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainlab.config.schema import Config, ModelConfig
from trainlab.config.validate import validate
from trainlab.errors import ConfigError
from trainlab.models import ImageSpec, build_model, count_params, list_models
from trainlab.models.layers import Attention, DropPath

# Small overrides so the whole file runs in seconds on a CPU; ignored by models that don't use them.
SMALL = dict(hidden=[32], widths=[8, 16], depth=2, dim=32, heads=2, patch_size=4)
MODEL_NAMES = [name for name, _, _ in list_models()]


def small_cfg(name: str, **overrides: object) -> ModelConfig:
    return ModelConfig(name=name, **{**SMALL, **overrides})


def test_registry_lists_every_family() -> None:
    families = {family for _, family, _ in list_models()}
    assert {"mlp", "cnn", "resnet", "vit"} <= families
    assert {"mlp", "cnn", "resnet18", "resnet34", "resnet50", "vit_tiny"} <= set(MODEL_NAMES)
    assert all(desc for _, _, desc in list_models())


@pytest.mark.parametrize("channels", [1, 3], ids=["grey", "rgb"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_contract(name: str, channels: int) -> None:
    torch.manual_seed(0)
    spec = ImageSpec(channels=channels, height=16, width=16, num_classes=7)
    model = build_model(small_cfg(name, dropout=0.1, drop_path=0.1), spec)
    x = torch.randn(3, channels, 16, 16)

    logits = model(x)
    assert logits.shape == (3, 7)
    logits.logsumexp(dim=1).sum().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no grad for {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite grad for {pname}"

    model.eval()
    feats = model.forward_features(x)
    assert feats.shape == (3, model.num_features)
    assert isinstance(model.head, nn.Linear) and model.head.in_features == model.num_features
    # The head really is the last step: replacing it (as a probe does) changes the output size.
    model.head = nn.Linear(model.num_features, 2)
    assert model(x).shape == (3, 2)

    params = dict(model.named_parameters())
    assert model.no_weight_decay() <= params.keys()


def test_count_params_matches_numel() -> None:
    model = build_model(small_cfg("cnn"), ImageSpec(1, 8, 8, 10))
    assert count_params(model) == sum(p.numel() for p in model.parameters())
    for p in model.stem.parameters():
        p.requires_grad_(False)
    frozen = sum(p.numel() for p in model.stem.parameters())
    assert count_params(model, trainable_only=True) == count_params(model) - frozen > 0


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        build_model(ModelConfig(name="resnet99"), ImageSpec(1, 8, 8, 10))
    message = str(err.value)
    assert "model.name" in message and "resnet99" in message
    assert "\n" not in message
    for name in MODEL_NAMES:
        assert name in message


# ---------------------------------------------------------------- mlp / cnn


def test_mlp_layers_follow_hidden() -> None:
    model = build_model(ModelConfig(name="mlp", hidden=[20, 10]), ImageSpec(3, 4, 4, 5))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(48, 20), (20, 10), (10, 5)]
    assert model.num_features == 10


def test_cnn_defaults_and_downsampling() -> None:
    model = build_model(ModelConfig(name="cnn"), ImageSpec(1, 28, 28, 10))
    assert model.num_features == 128  # default widths [32, 64, 128]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2
    # Spatial size goes down while channels go up: [B, 128, 7, 7] before pooling.
    assert model.stages(model.stem(torch.randn(2, 1, 28, 28))).shape == (2, 128, 7, 7)


def test_cnn_never_pools_below_one_pixel() -> None:
    spec = ImageSpec(1, 8, 8, 10)
    model = build_model(ModelConfig(name="cnn", widths=[4, 4, 4, 4, 4, 4]), spec)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3  # 8 -> 4 -> 2 -> 1
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_cnn_rejects_empty_widths() -> None:
    """Checked once, by the schema rule of model.widths (the builder trusts it)."""
    with pytest.raises(ConfigError, match=r"model\.widths must list at least 1 value"):
        validate(Config(model=ModelConfig(name="cnn", widths=[])))
    with pytest.raises(ConfigError, match=r"model\.widths must list values >= 1 each"):
        validate(Config(model=ModelConfig(name="cnn", widths=[32, 0])))


# ---------------------------------------------------------------- resnet


def test_resnet_stem_depends_on_image_size() -> None:
    small = build_model(ModelConfig(name="resnet18"), ImageSpec(1, 28, 28, 10))
    assert small.body.conv1.kernel_size == (3, 3) and small.body.conv1.stride == (1, 1)
    assert small.body.conv1.in_channels == 1
    assert isinstance(small.body.maxpool, nn.Identity)

    large = build_model(ModelConfig(name="resnet18"), ImageSpec(3, 96, 96, 10))
    assert large.body.conv1.kernel_size == (7, 7) and large.body.conv1.stride == (2, 2)
    assert isinstance(large.body.maxpool, nn.MaxPool2d)
    large.eval()
    assert large(torch.randn(2, 3, 96, 96)).shape == (2, 10)


def test_resnet_zero_inits_last_bn_of_each_branch() -> None:
    model = build_model(ModelConfig(name="resnet18"), ImageSpec(1, 16, 16, 10))
    assert torch.all(model.body.layer1[0].bn2.weight == 0)
    assert torch.all(model.body.layer1[0].bn1.weight == 1)


# ---------------------------------------------------------------- vit


@pytest.mark.parametrize(("size", "patch", "tokens"), [(28, 4, 50), (8, 2, 17), (32, 8, 17)])
def test_vit_forward_tokens_has_cls_plus_patches(size: int, patch: int, tokens: int) -> None:
    model = build_model(small_cfg("vit_tiny", patch_size=patch), ImageSpec(1, size, size, 10))
    assert model.num_patches == tokens - 1
    assert model.forward_tokens(torch.randn(2, 1, size, size)).shape == (2, tokens, 32)
    assert model.pos_embed.shape == (1, tokens, 32)


def test_vit_non_square_images() -> None:
    model = build_model(small_cfg("vit_tiny"), ImageSpec(3, 8, 12, 4))
    assert model.forward_tokens(torch.randn(2, 3, 8, 12)).shape == (2, 1 + 2 * 3, 32)


def test_vit_image_size_override_and_variant_defaults() -> None:
    model = build_model(ModelConfig(name="vit_small", image_size=16), ImageSpec(1, 28, 28, 10))
    assert model.num_features == 384 and len(model.blocks) == 12
    assert model.blocks[0].attn.heads == 6
    assert model.num_patches == 16  # (16 / 4) ** 2, from model.image_size, not the data


def test_vit_pool_mean_differs_from_cls() -> None:
    torch.manual_seed(0)
    spec = ImageSpec(1, 8, 8, 10)
    cls_model = build_model(small_cfg("vit_tiny", pool="cls"), spec).eval()
    mean_model = build_model(small_cfg("vit_tiny", pool="mean"), spec).eval()
    mean_model.load_state_dict(cls_model.state_dict())
    x = torch.randn(2, 1, 8, 8)
    tokens = cls_model.forward_tokens(x)
    torch.testing.assert_close(cls_model.forward_features(x), tokens[:, 0])
    torch.testing.assert_close(mean_model.forward_features(x), tokens[:, 1:].mean(dim=1))
    assert not torch.allclose(cls_model.forward_features(x), mean_model.forward_features(x))


def test_vit_no_weight_decay_names_the_tokens() -> None:
    model = build_model(small_cfg("vit_tiny"), ImageSpec(1, 8, 8, 10))
    names = dict(model.named_parameters())
    assert {"pos_embed", "cls_token"} <= model.no_weight_decay() <= names.keys()


def test_vit_patch_size_must_divide_image() -> None:
    with pytest.raises(ConfigError) as err:
        build_model(small_cfg("vit_tiny", patch_size=5), ImageSpec(1, 28, 28, 10))
    message = str(err.value)
    assert "model.patch_size" in message and "28x28" in message
    assert "1, 2, 4, 7, 14, 28" in message


def test_vit_heads_must_divide_dim() -> None:
    with pytest.raises(ConfigError, match=r"model\.heads"):
        build_model(small_cfg("vit_tiny", dim=30, heads=4), ImageSpec(1, 8, 8, 10))


def test_vit_rejects_unknown_pool() -> None:
    with pytest.raises(ConfigError, match=r"model\.pool must be one of: cls, mean"):
        validate(Config(model=small_cfg("vit_tiny", pool="max")))


def test_vit_drop_path_increases_linearly_over_depth() -> None:
    model = build_model(small_cfg("vit_tiny", depth=3, drop_path=0.2), ImageSpec(1, 8, 8, 10))
    rates = [block.drop_path.p for block in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])


def test_attention_matches_explicit_softmax() -> None:
    torch.manual_seed(0)
    attn = Attention(dim=16, heads=4).eval()
    x = torch.randn(2, 5, 16)  # [B, L, D]
    weights = attn.attention_map(x)  # [B, h, L, L]
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 5))
    _, _, v = attn._qkv(x)  # [B, h, L, D/h]
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_drop_path_drops_whole_samples_and_keeps_the_mean() -> None:
    torch.manual_seed(0)
    layer = DropPath(0.5)
    x = torch.ones(4000, 3)
    out = layer(x)
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert torch.all(out == out[:, :1])  # a sample is dropped or kept as a whole
    assert out.mean().item() == pytest.approx(1.0, abs=0.1)
    assert torch.equal(layer.eval()(x), x)

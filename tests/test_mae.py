"""Masked autoencoder: masking, un-shuffling, the masked-patch loss, visuals, checkpoints of the
decoder, exact resume, and the configs it refuses."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import quick, stop_after_first_epoch

from trainlab.config.load import build_config
from trainlab.engine.trainer import Interrupted
from trainlab.errors import ConfigError
from trainlab.launch.job import train_job as train  # with the MAE pictures
from trainlab.methods import build_method
from trainlab.methods.mae import (
    MAE,
    masked_mse,
    patch_targets,
    patchify,
    random_masking,
    restore_order,
    unpatchify,
)
from trainlab.models import ImageSpec, build_model

TINY_VIT = ["model.name=vit_tiny", "model.depth=2", "model.dim=32", "model.heads=2",
            "model.patch_size=2"]
TINY_MAE = [*TINY_VIT, "method.name=mae", "method.decoder_depth=1", "method.decoder_dim=32",
            "method.decoder_heads=2"]
DIGITS = ImageSpec(channels=1, height=8, width=8, num_classes=10)


def tiny_mae(*extra: str) -> MAE:
    cfg = build_config(None, [*TINY_MAE, *extra])
    torch.manual_seed(0)
    return build_method(cfg, build_model(cfg.model, DIGITS))


def test_patchify_round_trip_and_order():
    x = torch.randn(3, 2, 8, 8)
    p = patchify(x, 2)  # [3, 16, 2*2*2]
    assert p.shape == (3, 16, 8)
    assert torch.equal(unpatchify(p, 2, (4, 4), 2), x)
    # patch 1 is the second patch of the first row: rows 0-1, columns 2-3 (pixels (p, p, C))
    assert torch.equal(p[:, 1], x[:, :, 0:2, 2:4].permute(0, 2, 3, 1).reshape(3, 8))
    # the same row-major order as the ViT's PatchEmbed (a conv with stride p, flattened)
    conv = torch.nn.Conv2d(2, 8, 2, stride=2, bias=False)
    tokens = conv(x).flatten(2).transpose(1, 2)  # [3, 16, 8]
    w = conv.weight.permute(0, 2, 3, 1).reshape(8, 8)  # [out, (p, p, C)]
    assert torch.allclose(tokens, p @ w.T, atol=1e-5)


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.3])
def test_mask_shape_and_kept_count(ratio):
    b, n, d = 5, 16, 3
    x = torch.randn(b, n, d)
    keep = round(n * (1 - ratio))
    kept, mask, ids_restore = random_masking(x, keep, torch.rand(b, n))
    assert kept.shape == (b, keep, d) and mask.shape == (b, n) and ids_restore.shape == (b, n)
    assert torch.equal(mask.sum(1), torch.full((b,), float(n - keep)))
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    for i in range(b):  # the kept tokens are exactly the tokens at mask == 0
        visible = x[i][mask[i] == 0]
        assert torch.equal(visible[visible[:, 0].argsort()], kept[i][kept[i][:, 0].argsort()])
    assert len({tuple(m.tolist()) for m in mask}) > 1  # per-sample masks


def test_unshuffle_returns_image_order():
    b, n, d = 4, 16, 2
    x = torch.arange(b * n * d, dtype=torch.float32).view(b, n, d)
    noise = torch.rand(b, n)
    kept, mask, ids_restore = random_masking(x, 5, noise)
    ids_shuffle = noise.argsort(1)
    # gather with ids_shuffle, then with ids_restore: the identity
    shuffled = x.gather(1, ids_shuffle[:, :, None].expand(-1, -1, d))
    assert torch.equal(shuffled.gather(1, ids_restore[:, :, None].expand(-1, -1, d)), x)
    sentinel = torch.full((1, 1, d), -1.0)
    restored = restore_order(kept, sentinel, ids_restore)  # [B, N, D]
    vis = mask == 0
    assert torch.equal(restored[vis], x[vis])
    assert (restored[~vis] == -1).all()


def test_loss_only_on_masked_patches():
    torch.manual_seed(0)
    pred, target = torch.randn(3, 16, 4), torch.randn(3, 16, 4)
    mask = (torch.rand(3, 16) < 0.75).float()
    loss = masked_mse(pred, target, mask)
    expect = ((pred - target) ** 2).mean(-1)[mask == 1].mean()
    assert loss.item() == pytest.approx(expect.item(), rel=1e-6)
    changed = pred.clone()
    changed[mask == 0] += 100.0  # wild predictions where the patch was visible
    assert masked_mse(changed, target, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    changed[mask == 1] += 1.0
    assert masked_mse(changed, target, mask).item() > loss.item() + 0.5


def test_norm_pix_targets_per_patch():
    t = patch_targets(torch.randn(2, 16, 8) * 3 + 5, norm_pix=True)
    assert torch.allclose(t.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(t.var(-1), torch.ones(2, 16), atol=1e-3)


def test_encoder_sees_only_visible_patches():
    mae = tiny_mae().eval()
    imgs = torch.randn(4, 1, 8, 8)
    noise = torch.rand(4, 16)
    pred, _, mask = mae._run(imgs, noise)
    # change the pixels of the removed patches only: the prediction must not move
    mask_px = unpatchify(mask[:, :, None].expand(-1, -1, 4), 2, (4, 4), 1)  # [4, 1, 8, 8]
    pred2, _, _ = mae._run(imgs + 5.0 * mask_px * torch.randn_like(imgs), noise)
    assert torch.allclose(pred, pred2, atol=1e-5)
    pred3, _, _ = mae._run(imgs + 5.0 * (1 - mask_px) * torch.randn_like(imgs), noise)
    assert not torch.allclose(pred, pred3, atol=1e-3)


def test_masks_come_from_the_global_rng_and_eval_is_fixed():
    mae = tiny_mae()
    batch = (torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    torch.manual_seed(1)
    a = mae(batch)["loss"]
    torch.manual_seed(1)
    b = mae(batch)["loss"]
    c = mae(batch)["loss"]
    assert a.item() == b.item() and a.item() != c.item()
    state = torch.get_rng_state()
    e1, e2 = mae.evaluate(batch)["loss"], mae.evaluate(batch)["loss"]
    assert e1.item() == e2.item()
    assert torch.equal(torch.get_rng_state(), state)  # evaluation draws nothing from it


@pytest.mark.parametrize("over,expect", [
    (["model.name=cnn"], ["method.name=mae", "Vision Transformer", "model.name=cnn"]),
    (["method.mask_ratio=0"], ["method.mask_ratio must be in (0, 1) (got 0)"]),
    (["method.mask_ratio=1"], ["method.mask_ratio must be in (0, 1) (got 1)"]),
    (["method.mask_ratio=0.99"], ["keeps 0 of the 16 patches"]),
    (["method.decoder_heads=3"], ["method.decoder_heads=3", "divide"]),
    (["train.ema_decay=0.99"], ["train.ema_decay", "method.name=mae"]),
])
def test_bad_mae_configs(tmp_path, over, expect):
    with pytest.raises(ConfigError) as e:
        train(build_config(None, quick(tmp_path, *TINY_MAE, *over)))
    for s in expect:
        assert s in str(e.value), (s, str(e.value))
    assert not (tmp_path / "checkpoints").exists()


def test_mae_run_saves_decoder_visuals_and_resumes_exactly(tmp_path, monkeypatch):
    over = [*TINY_MAE, "train.epochs=2", "train.batch_size=128"]
    straight = train(build_config(None, quick(tmp_path / "a", *over)))
    assert straight["test_acc"] is None and straight["test_loss"] > 0
    ck = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)
    vit = build_model(build_config(None, TINY_VIT).model, DIGITS)
    assert ck["model"].keys() == vit.state_dict().keys()  # the classifier-shaped ViT
    assert any(k.startswith("decoder.blocks.0.") for k in ck["method"])
    assert "decoder.mask_token" in ck["method"]
    for e in (1, 2):
        png = tmp_path / "a" / "mae" / f"epoch_{e:03d}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recs = [json.loads(x) for x in (tmp_path / "a/metrics.jsonl").open()]
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"] and "val_loss" in epochs[1]

    # stop after epoch 1, resume: model and decoder end exactly as in the straight run
    restore = stop_after_first_epoch(monkeypatch)
    with pytest.raises(Interrupted):
        train(build_config(None, quick(tmp_path / "b", *over)))
    restore()
    train(build_config(None, quick(tmp_path / "b", *over, "run.resume=auto")))
    cb = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    for part in ("model", "method"):
        assert ck[part].keys() == cb[part].keys()
        for k in ck[part]:
            assert torch.equal(ck[part][k], cb[part][k]), f"{part}.{k} differs"

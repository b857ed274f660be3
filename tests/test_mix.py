"""Mixup / CutMix: soft labels, the mixed pixels, reproducibility, the soft-target loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import quick

from trainlab.config.load import build_config
from trainlab.config.schema import Config, DataConfig
from trainlab.config.validate import validate
from trainlab.data.file_loader import FileLoader
from trainlab.data.loader import DeviceLoader
from trainlab.data.mix import MixSpec, mix_batch, mix_generator, resolve_mix
from trainlab.engine.run import train
from trainlab.errors import ConfigError
from trainlab.methods.supervised import Supervised, soft_cross_entropy

B, K = 8, 10
X = torch.randn(B, 3, 12, 16, generator=torch.Generator().manual_seed(0))
Y = torch.arange(B)  # distinct labels: image i's partner B-1-i has another class
MIXUP = MixSpec(mixup_alpha=1.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, num_classes=K)
CUTMIX = MixSpec(mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, num_classes=K)


def mix(spec, seed=0, x=X, y=Y):
    return mix_batch(x, y, spec, torch.Generator().manual_seed(seed))


def lam_of(y_soft):
    """lambda per row: the weight on the image's own class; asserts the rest of the row."""
    lam = y_soft[torch.arange(B), Y]
    torch.testing.assert_close(y_soft.sum(1), torch.ones(B))
    torch.testing.assert_close(y_soft[torch.arange(B), Y.flip(0)], 1 - lam)
    assert (y_soft > 0).sum(1).max() <= 2
    return lam


def test_mixup_blends_each_image_with_the_reversed_batch():
    for seed in range(5):
        x, y_soft = mix(MIXUP, seed)
        lam = lam_of(y_soft)
        assert torch.all(lam == lam[0]) and 0 < lam[0] < 1
        torch.testing.assert_close(x, lam[0] * X + (1 - lam[0]) * X.flip(0))


def test_cutmix_pastes_one_box_and_lambda_is_the_kept_area():
    sizes = set()
    for seed in range(20):
        x, y_soft = mix(CUTMIX, seed)
        lam = lam_of(y_soft)
        pasted = (x == X.flip(0)).all(1)  # [B, H, W]
        assert torch.equal(pasted | (x == X).all(1), torch.ones_like(pasted))
        box = pasted[0]
        assert all(torch.equal(box, p) for p in pasted)  # one box for the whole batch
        if box.any():
            rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
            assert box.sum() == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        area = box.float().mean()
        torch.testing.assert_close(lam, torch.full((B,), 1 - area.item()))
        sizes.add(int(box.sum()))
    assert len(sizes) > 5  # the box varies with the seed


def test_switch_prob_picks_cutmix_or_mixup():
    both = dict(mixup_alpha=1.0, cutmix_alpha=1.0, prob=1.0, num_classes=K)
    for seed in range(5):
        x, _ = mix(MixSpec(switch_prob=1.0, **both), seed)
        assert ((x == X) | (x == X.flip(0))).all()  # cutmix: every pixel from one image
        x, y_soft = mix(MixSpec(switch_prob=0.0, **both), seed)
        lam = lam_of(y_soft)[0]
        torch.testing.assert_close(x, lam * X + (1 - lam) * X.flip(0))


def test_mix_prob_zero_leaves_the_batch_and_gives_one_hot_labels():
    spec = MixSpec(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0, switch_prob=0.5, num_classes=K)
    x, y_soft = mix(spec)
    assert torch.equal(x, X)
    assert y_soft.dtype == torch.float32 and torch.equal(y_soft, F.one_hot(Y, K).float())


def test_reproducible_from_the_seed_and_different_per_batch():
    both = MixSpec(mixup_alpha=0.4, cutmix_alpha=1.0, prob=0.8, switch_prob=0.5, num_classes=K)
    g = mix_generator  # seeded by (run.seed, epoch, batch index)
    a = mix_batch(X, Y, both, g(1, 2, 3))
    b = mix_batch(X, Y, both, g(1, 2, 3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    others = [mix_batch(X, Y, both, gen)[1] for gen in (g(1, 2, 4), g(1, 3, 3), g(2, 2, 3))]
    assert all(not torch.equal(a[1], o) for o in others)


@pytest.mark.parametrize("make", ["device", "file"])
def test_loaders_mix_training_batches_and_resume_exactly(make):
    x = torch.randint(0, 256, (40, 1, 5, 5), dtype=torch.uint8)
    y = torch.arange(40) % K
    spec = MixSpec(mixup_alpha=0.4, cutmix_alpha=1.0, prob=0.8, switch_prob=0.5, num_classes=K)
    cls = DeviceLoader if make == "device" else FileLoader
    extra = {} if make == "device" else {"num_workers": 0}
    ld = cls(x, y, 8, [0.5], [0.25], shuffle=True, seed=1, mix=spec, **extra)
    full = [(a.clone(), b.clone()) for a, b, _ in ld.epoch(2)]
    rest = list(ld.epoch(2, start=3))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
               for a, b in zip(full[3:], rest, strict=True))
    assert all(yb.shape == (8, K) and yb.dtype == torch.float32 for _, yb in full)
    assert sum(not torch.equal(yb, yb.round()) for _, yb in full) >= 2  # some batches mixed


def test_resolve_mix_switches_and_checks():
    assert resolve_mix(DataConfig(), K) is None  # both alphas 0
    assert resolve_mix(DataConfig(mixup_alpha=0.2, augment=False), K) is None
    spec = resolve_mix(DataConfig(mixup_alpha=0.2, cutmix_alpha=1.0, mix_prob=0.5), K)
    assert spec == MixSpec(0.2, 1.0, 0.5, 0.5, K)
    for bad, key in [({"mixup_alpha": -1.0}, "data.mixup_alpha"),
                     ({"cutmix_alpha": float("nan")}, "data.cutmix_alpha"),
                     ({"mix_prob": 1.5}, "data.mix_prob"),
                     ({"mix_switch_prob": -0.1}, "data.mix_switch_prob")]:
        with pytest.raises(ConfigError, match=key):  # the schema rule, checked before building
            validate(Config(data=DataConfig(**bad)))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_soft_target_loss_equals_cross_entropy_for_one_hot(smoothing):
    logits = torch.randn(B, K, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, K, (B,))
    expected = F.cross_entropy(logits, y, label_smoothing=smoothing)
    torch.testing.assert_close(soft_cross_entropy(logits, F.one_hot(y, K).float(), smoothing),
                               expected)
    method = Supervised(torch.nn.Flatten(), label_smoothing=smoothing)  # "model": logits as is
    hard, soft = method((logits, y)), method((logits, F.one_hot(y, K).float()))
    torch.testing.assert_close(soft["loss"], hard["loss"])
    assert soft["acc"] == hard["acc"]
    # a 50/50 target: the loss is the mean of the two one-hot losses
    half = (F.one_hot(y, K) + F.one_hot(y.flip(0), K)).float() / 2
    mean = (expected + F.cross_entropy(logits, y.flip(0), label_smoothing=smoothing)) / 2
    torch.testing.assert_close(soft_cross_entropy(logits, half, smoothing), mean)


def test_digits_trains_with_mixup_and_cutmix(tmp_path):
    s = train(build_config(None, quick(tmp_path, "model.name=mlp", "train.epochs=4",
                                       "train.batch_size=128", "optim.lr=4e-3",
                                       "data.mixup_alpha=0.2", "data.cutmix_alpha=1.0")))
    assert s["test_acc"] > 0.7

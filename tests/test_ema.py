"""EMA arithmetic."""

import pytest
import torch
from torch import nn

from trainlab.engine.ema import EMA


def test_ema_update_arithmetic():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = EMA(m, decay=0.9)
    w0 = m[0].weight.detach().clone()
    with torch.no_grad():
        m[0].weight.add_(1.0)
        m[1].running_mean.fill_(2.0)
        m[1].num_batches_tracked.fill_(7)
    ema.update(m)
    torch.testing.assert_close(ema.module[0].weight, 0.9 * w0 + 0.1 * (w0 + 1.0))
    torch.testing.assert_close(ema.module[1].running_mean, torch.full((2,), 0.2))
    assert int(ema.module[1].num_batches_tracked) == 7
    ema.update(m)  # second step: 0.9 * (0.9 w0 + 0.1 (w0+1)) + 0.1 (w0+1) = w0 + 0.19
    torch.testing.assert_close(ema.module[0].weight, w0 + 0.19)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_is_a_copy_not_a_view():
    m = nn.Linear(2, 2)
    ema = EMA(m, 0.5)
    with torch.no_grad():
        m.weight.zero_()
    assert not torch.equal(ema.module.weight, m.weight)


def test_bad_decay():
    with pytest.raises(ValueError):
        EMA(nn.Linear(1, 1), 1.0)


def test_ema_warmup_follows_the_weights_early_and_reaches_decay():
    ema = EMA(nn.Linear(1, 1, bias=False), 0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(90) == pytest.approx(0.91)
    assert ema.decay_at(10_000) == 0.999 and ema.decay_at(None) == 0.999
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        ema.module.weight.fill_(0.0)
        m.weight.fill_(1.0)
    ema.update(m, step=0)  # 0.1 * 0 + 0.9 * 1
    torch.testing.assert_close(ema.module.weight, torch.full((1, 1), 0.9))

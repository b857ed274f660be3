"""Weight decay goes to conv/linear weights only."""

import pytest
import torch
from torch import nn

from trainlab.config.schema import Config, OptimConfig
from trainlab.config.validate import validate
from trainlab.errors import ConfigError
from trainlab.optim.factory import build_optimizer, param_groups


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 4))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))

    def no_weight_decay(self):
        return {"pos_embed", "cls_token"}


def test_groups():
    decay, no_decay = param_groups(Toy(), 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert sorted(decay["names"]) == ["conv.weight", "fc.weight"]
    assert sorted(no_decay["names"]) == sorted([
        "conv.bias", "bn.weight", "bn.bias", "ln.weight", "ln.bias", "fc.bias", "pos_embed",
        "cls_token"])


def test_frozen_params_are_left_out():
    m = Toy()
    m.conv.weight.requires_grad_(False)
    decay, _ = param_groups(m, 0.1)
    assert decay["names"] == ["fc.weight"]


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                      ("adamw", torch.optim.AdamW)])
def test_factory(name, cls):
    opt = build_optimizer(OptimConfig(name=name, weight_decay=0.1, nesterov=name == "sgd"), Toy())
    assert isinstance(opt, cls)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    if name == "sgd":
        assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.9


def test_bad_optimizer():
    """The name is checked once, by the schema's choices (build_optimizer trusts it)."""
    with pytest.raises(ConfigError, match="optim.name must be one of: sgd, adam, adamw"):
        validate(Config(optim=OptimConfig(name="lamb")))

"""Downstream use of pretrained weights: model.init, linear_probe, finetune with layer-wise lr
decay, `trainlab knn`, and data.labels_fraction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import quick

from trainlab.cli import main
from trainlab.config.load import build_config
from trainlab.config.schema import Config, DataConfig, OptimConfig
from trainlab.config.validate import validate
from trainlab.data.sources import load_data
from trainlab.engine.knn import knn_predict
from trainlab.engine.run import evaluate_run, train
from trainlab.errors import ConfigError
from trainlab.methods import build_method
from trainlab.methods.probe import ProbeHead
from trainlab.models import ImageSpec, build_model
from trainlab.optim.factory import build_optimizer, layer_decay_groups

TINY_VIT = ["model.name=vit_tiny", "model.depth=2", "model.dim=32", "model.heads=2",
            "model.patch_size=2"]
TINY_CNN = ["model.name=cnn", "model.widths=[8,16]"]
FAST = ["train.epochs=1", "train.batch_size=128"]


def ckpt(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def encoder(sd):
    return {k: v for k, v in sd.items() if not k.startswith("head.")}


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("mae")
    train(build_config(None, quick(d, *TINY_VIT, *FAST, "method.name=mae",
                                   "method.decoder_depth=1", "method.decoder_dim=32",
                                   "method.decoder_heads=2")))
    return d


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn")
    train(build_config(None, quick(d, *TINY_CNN, "train.epochs=3", "train.batch_size=128",
                                   "sched.warmup_epochs=0", "optim.lr=0.01")))
    return d


def test_linear_probe_uses_the_saved_encoder_and_keeps_it_frozen(tmp_path, mae_run):
    s = train(build_config(None, quick(tmp_path, *TINY_VIT, *FAST, "method.name=linear_probe",
                                       f"model.init={mae_run}", "optim.lr=0.01")))
    pre, probe = ckpt(mae_run), ckpt(tmp_path)
    assert "decoder.mask_token" not in pre["model"]  # the decoder never reaches the classifier
    enc = encoder(pre["model"])
    assert encoder(probe["model"]).keys() == enc.keys()
    for k, v in enc.items():  # loaded exactly, and unchanged by a whole epoch of probing
        assert torch.equal(probe["model"][k], v), k
    assert {"head.0.running_mean", "head.1.weight", "head.1.bias"} <= probe["model"].keys()
    assert "head.0.weight" not in probe["model"]  # BatchNorm1d without affine parameters
    assert not torch.equal(probe["model"]["head.0.running_mean"],
                           torch.zeros_like(probe["model"]["head.0.running_mean"]))
    assert 0 <= s["test_acc"] <= 1 and s["test_top5"] is not None
    # `trainlab eval` rebuilds the probe head and reproduces the test accuracy
    assert evaluate_run(tmp_path)["acc"] == pytest.approx(s["test_acc"], abs=1e-9)


def test_linear_probe_keeps_batchnorm_statistics_of_a_cnn(tmp_path, cnn_run):
    s = train(build_config(None, quick(tmp_path, *TINY_CNN, "train.epochs=2",
                                       "train.batch_size=128", "sched.warmup_epochs=0",
                                       "method.name=linear_probe", f"model.init={cnn_run}",
                                       "optim.lr=0.03")))
    pre, probe = encoder(ckpt(cnn_run)["model"]), ckpt(tmp_path)["model"]
    assert any("running_mean" in k for k in pre)
    for k, v in pre.items():  # running statistics included: the encoder stays in eval mode
        assert torch.equal(probe[k], v), k
    assert s["test_acc"] > 0.4  # chance: 0.1


def test_probe_trains_only_the_head():
    cfg = build_config(None, [*TINY_CNN, "method.name=linear_probe"])
    model = build_model(cfg.model, ImageSpec(1, 8, 8, 10))
    method = build_method(cfg, model)
    assert isinstance(model.head, ProbeHead)
    trainable = [n for n, p in method.named_parameters() if p.requires_grad]
    assert trainable == ["model.head.1.weight", "model.head.1.bias"]
    method.train()
    assert not model.training and not model.stem.training and model.head.training
    assert build_method(cfg, model).model.head is model.head  # an EMA copy keeps its head


def test_finetune_with_layer_decay(tmp_path, mae_run):
    s = train(build_config(None, quick(tmp_path, *TINY_VIT, *FAST, "method.name=finetune",
                                       f"model.init={mae_run}", "optim.layer_decay=0.5")))
    assert 0 <= s["test_acc"] <= 1
    ft = ckpt(tmp_path)["model"]
    pre = ckpt(mae_run)["model"]
    assert not torch.equal(ft["blocks.0.attn.qkv.weight"], pre["blocks.0.attn.qkv.weight"])


def test_layer_decay_scales():
    cfg = build_config(None, [*TINY_VIT, "method.name=finetune"])
    model = build_model(cfg.model, ImageSpec(1, 8, 8, 10))
    method = build_method(cfg, model)
    expect = {"patch_embed.": 0.5 ** 3, "pos_embed": 0.5 ** 3, "cls_token": 0.5 ** 3,
              "blocks.0.": 0.5 ** 2, "blocks.1.": 0.5, "norm.": 1.0, "head.": 1.0}
    seen = set()
    for g in layer_decay_groups(method, 0.05, 0.5):
        for name in g["names"]:
            rel = name.removeprefix("model.")
            (prefix,) = [p for p in expect if rel.startswith(p)]
            assert g["lr_scale"] == expect[prefix], name
            seen.add(name)
            no_decay = rel in ("pos_embed", "cls_token") or rel.endswith("bias") or ".norm" in \
                rel or rel.startswith("norm.")
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), name
    assert seen == {n for n, _ in method.named_parameters()}
    opt = build_optimizer(OptimConfig(layer_decay=0.5), method)
    scales = {g["lr_scale"] for g in opt.param_groups}
    assert scales == {0.125, 0.25, 0.5, 1.0}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(method.parameters()))


def test_layer_decay_needs_a_vit():
    cfg = build_config(None, TINY_CNN)
    model = build_model(cfg.model, ImageSpec(1, 8, 8, 10))
    with pytest.raises(ConfigError, match="optim.layer_decay=0.7 applies to Vision Trans"):
        build_optimizer(OptimConfig(layer_decay=0.7), model)
    with pytest.raises(ConfigError, match=r"optim.layer_decay must be in \(0, 1\]"):
        validate(Config(optim=OptimConfig(layer_decay=1.5)))  # the schema range, before building


def test_init_errors(tmp_path, mae_run, cnn_run):
    with pytest.raises(ConfigError) as e:
        train(build_config(None, quick(tmp_path / "a", *TINY_VIT, "model.init=/nope/run")))
    assert "model.init='/nope/run'" in str(e.value) and "no such checkpoint" in str(e.value)
    with pytest.raises(ConfigError) as e:  # CNN weights into a ViT
        train(build_config(None, quick(tmp_path / "b", *TINY_VIT, f"model.init={cnn_run}",
                                       "method.name=linear_probe")))
    msg = str(e.value)
    assert "holds cnn (widths [8, 16]" in msg and "model.name=vit_tiny" in msg
    assert "missing in the checkpoint (30): cls_token, pos_embed" in msg and "25 more" in msg
    assert "not in this model" in msg and "stem.0.0.weight" in msg and "config.yaml" in msg
    with pytest.raises(ConfigError) as e:  # a ViT of another width
        train(build_config(None, quick(tmp_path / "c", *TINY_VIT, "model.dim=64",
                                       f"model.init={mae_run}")))
    assert "holds vit_tiny (dim 32, depth 2" in str(e.value)
    assert "cls_token (1, 1, 32) vs (1, 1, 64)" in str(e.value)
    assert not (tmp_path / "b" / "checkpoints").exists()


def test_knn_vote():
    bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0],
                                                       [0.2, 1.0]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [0.1, 1.0]]), dim=1)
    assert knn_predict(q, bank, labels, 2, 2, 0.07).tolist() == [0, 1]
    # k=3: two weak class-1 votes against one strong class-0 vote; T decides
    q2 = torch.nn.functional.normalize(torch.tensor([[1.0, 0.8]]), dim=1)
    bank2 = torch.nn.functional.normalize(torch.tensor([[1.0, 0.8], [0.3, 1.0], [0.3, 1.0]]), 1)
    lab2 = torch.tensor([0, 1, 1])
    assert knn_predict(q2, bank2, lab2, 2, 3, 0.01).tolist() == [0]  # nearest dominates
    assert knn_predict(q2, bank2, lab2, 2, 3, 100.0).tolist() == [1]  # ~ majority vote


def test_knn_command(capsys, cnn_run):
    code = main(["knn", str(cnn_run), "--k", "5"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "test kNN accuracy" in out and "k=5" in out and "359 test images" in out
    acc = float(out.split("test kNN accuracy ")[1].split()[0])
    assert 0.5 < acc <= 1.0
    code = main(["knn", "/nope/run"])
    assert code == 2 and "/nope/run" in capsys.readouterr().err


def test_labels_fraction_per_class_counts():
    full = load_data(DataConfig())
    counts = np.bincount(full.y_train.numpy())
    part = load_data(DataConfig(labels_fraction=0.1))
    expect = np.maximum(1, np.floor(0.1 * counts + 0.5)).astype(int)
    assert np.bincount(part.y_train.numpy()).tolist() == expect.tolist()
    assert torch.equal(part.y_val, full.y_val) and torch.equal(part.y_test, full.y_test)
    tiny = load_data(DataConfig(labels_fraction=0.001))
    assert np.bincount(tiny.y_train.numpy()).tolist() == [1] * 10
    # images stay with their labels, the draw repeats and a smaller share is a subset
    rows = {tuple(x.flatten().tolist()): int(y)
            for x, y in zip(full.x_train, full.y_train, strict=True)}
    assert all(rows.get(tuple(x.flatten().tolist())) == int(y)
               for x, y in zip(part.x_train, part.y_train, strict=True))
    again = load_data(DataConfig(labels_fraction=0.1))
    assert torch.equal(again.x_train, part.x_train)
    small = {tuple(x.flatten().tolist()) for x in load_data(
        DataConfig(labels_fraction=0.05)).x_train}
    assert small <= {tuple(x.flatten().tolist()) for x in part.x_train}
    other = load_data(DataConfig(labels_fraction=0.1, split_seed=1))
    assert not torch.equal(other.y_train, part.y_train) or not torch.equal(
        other.x_train, part.x_train)
    with pytest.raises(ConfigError, match=r"data.labels_fraction must be in \(0, 1\] \(got 0\)"):
        load_data(DataConfig(labels_fraction=0.0))


def test_pretraining_metrics_file(mae_run):
    recs = [json.loads(x) for x in (mae_run / "metrics.jsonl").open()]
    test = [r for r in recs if r["kind"] == "test"][0]
    assert "test_loss" in test and "test_acc" not in test

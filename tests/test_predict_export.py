"""`trainlab predict` (image files in, eval's preprocessing, CSV or table out) and `trainlab
export` (ONNX / TorchScript taking raw pixels, checked against PyTorch)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import quick
from PIL import Image

from trainlab.cli import main
from trainlab.engine.assemble import load_for_eval
from trainlab.engine.checkpoint import load_run
from trainlab.engine.predict import normalize, predict_split
from trainlab.engine.run import evaluate_run

MLP = ["data.name=digits", "model.name=mlp", "train.epochs=3"]


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("runs") / "mlp"
    assert main(["train", *quick(d, *MLP)]) == 0
    return d


@pytest.fixture(scope="module")
def test_pngs(mlp_run, tmp_path_factory) -> tuple[Path, list[str], list[Path]]:
    """The run's test images as PNG files in class folders: (folder, true names, files)."""
    cfg, ckpt, p = load_run(mlp_run)
    data, _ = load_for_eval(cfg, ckpt, p)
    x, y = data.split("test")
    root = tmp_path_factory.mktemp("pngs")
    names, files = [], []
    for i in range(len(y)):
        name = data.data.class_names[int(y[i])]
        f = root / name / f"{i:04d}.png"
        f.parent.mkdir(exist_ok=True)
        Image.fromarray(x[i, 0].cpu().numpy(), mode="L").save(f)
        names.append(name)
        files.append(f)
    return root, names, files


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_on_png_files_gives_eval_accuracy(mlp_run, test_pngs, tmp_path):
    root, names, files = test_pngs
    out = tmp_path / "preds.csv"
    assert main(["predict", str(mlp_run), str(root), "--out", str(out), "--topk", "3"]) == 0
    rows = {r["path"]: r for r in _read_csv(out)}
    assert list(_read_csv(out)[0]) == ["path", "pred", "prob", "top2", "prob2", "top3", "prob3"]
    assert len(rows) == len(files)
    preds = [rows[str(f)]["pred"] for f in files]
    acc = np.mean([p == n for p, n in zip(preds, names, strict=True)])
    assert acc == pytest.approx(evaluate_run(mlp_run, "test")["acc"], abs=1e-6)
    # image by image the same classes and probabilities as predicting the split in memory
    cfg, ckpt, p = load_run(mlp_run)
    data, method = load_for_eval(cfg, ckpt, p)
    probs, _ = predict_split(method.model, data, "test")
    classes = data.data.class_names
    assert preds == [classes[i] for i in probs.argmax(1).tolist()]
    got = np.array([float(rows[str(f)]["prob"]) for f in files])
    assert np.allclose(got, probs.max(1).values.numpy(), atol=1e-6)
    for r in rows.values():  # top-k: distinct class names, probabilities descending
        assert len({r["pred"], r["top2"], r["top3"]}) == 3
        assert float(r["prob"]) >= float(r["prob2"]) >= float(r["prob3"])


def test_predict_prints_a_table_and_converts_other_images(mlp_run, test_pngs, tmp_path, capsys):
    _, _, files = test_pngs
    rgb = tmp_path / "big colour.jpg"  # RGB, another size: converted to grey 8x8 as eval would
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 16, 3), dtype=np.uint8)
                    ).save(rgb)
    assert main(["predict", str(mlp_run), str(files[0]), str(rgb)]) == 0
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    assert lines[0].split() == ["path", "pred", "prob"] and len(lines) == 3
    assert lines[2].startswith(str(rgb))
    assert "2 images predicted" in cap.err


def test_predict_bad_files_stop_or_are_skipped_and_counted(mlp_run, test_pngs, tmp_path,
                                                           capsys):
    _, _, files = test_pngs
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    assert main(["predict", str(mlp_run), str(files[0]), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainlab: error:") and str(bad) in err and "--skip-bad-files" in err
    out = tmp_path / "p.csv"
    assert main(["predict", str(mlp_run), str(files[0]), str(bad), "--skip-bad-files",
                 "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert [r["path"] for r in _read_csv(out)] == [str(files[0])]
    assert "1 unreadable files skipped" in cap.out and str(bad) in cap.err
    assert main(["predict", str(mlp_run), str(tmp_path / "missing.png")]) == 2
    assert "no such file" in capsys.readouterr().err


def _pixels_and_reference(run: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n test images as floats in [0, 1] and the original model's logits on them."""
    cfg, ckpt, p = load_run(run)
    data, method = load_for_eval(cfg, ckpt, p)
    x = data.split("test")[0][:n].cpu()
    with torch.no_grad():
        ref = method.model.cpu().eval()(normalize(data.mean, data.std, x))
    return x.float() / 255.0, ref


def _check_export(run: Path, fmt: str, out: Path, capsys) -> None:
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    assert "max abs difference" in capsys.readouterr().out
    pixels, ref = _pixels_and_reference(run, 5)  # another batch size than export used
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {"images": pixels.numpy()})[0])
    else:
        got = torch.jit.load(str(out))(pixels)
    assert got.shape == ref.shape
    assert (got - ref).abs().max() <= 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_takes_pixels_and_matches_pytorch(mlp_run, tmp_path, fmt, capsys):
    pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    _check_export(mlp_run, fmt, tmp_path / f"model.{fmt}", capsys)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn", "resnet18", "vit_tiny"])
def test_onnx_export_matches_pytorch_for_each_model_family(model, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    extra = ["model.patch_size=2"] if model == "vit_tiny" else []
    run = tmp_path / model
    assert main(["train", *quick(run, "data.name=digits", f"model.name={model}",
                                 "train.epochs=1", "data.labels_fraction=0.1",
                                 *extra)]) == 0
    _check_export(run, "onnx", tmp_path / "m.onnx", capsys)


def test_export_refuses_pretraining_runs_and_bad_formats(mlp_run, tmp_path, capsys):
    assert main(["export", str(mlp_run), "--format", "tflite"]) == 2
    assert "--format" in capsys.readouterr().err
    run = tmp_path / "simclr"
    assert main(["train", *quick(run, "data.name=digits", "model.name=mlp", "method.name=simclr",
                                 "train.epochs=1", "data.labels_fraction=0.1")]) == 0
    assert main(["export", str(run), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert "method.name=simclr" in err and "linear_probe" in err

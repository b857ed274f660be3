"""`trainlab export`: a run's classifier as ONNX or TorchScript that takes raw pixels.

The exported graph takes float images in [0, 1] of shape (N, C, H, W), N dynamic, applies the
run's normalization itself and returns logits [N, num_classes]. Each export checks itself:
the original model (fed the run's normalized test images) and the exported file (fed the same
images as pixels / 255) must agree within `TOLERANCE` (fp32).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from trainlab.engine.assemble import load_for_eval
from trainlab.engine.predict import load_classifier_run, normalize, split_images
from trainlab.errors import ConfigError, TrainlabError
from trainlab.files import atomic_write_bytes

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-4  # max abs logit difference accepted (fp32)
CHECK_IMAGES = 16  # real test images the check runs on
TRACE_BATCH = 2  # the example batch exported with (the check runs another size: N is dynamic)
OPSET = 17


class PixelModel(nn.Module):
    """model((x - mean) / std) for x float [N, C, H, W] in [0, 1] -> logits [N, K]."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        c = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean) / self.std)


def _onnx_bytes(model: nn.Module, example: Tensor) -> bytes:
    try:
        import onnx  # noqa: F401  (the exporter needs it; say so before it fails deep inside)
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError("--format onnx needs the onnx and onnxruntime packages: pip install "
                          "'trainlab[export]' (or pip install onnx onnxruntime), or use "
                          "--format torchscript.") from None
    buf = io.BytesIO()
    with warnings.catch_warnings():  # tracer and deprecation notes are not the user's concern
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buf, input_names=["images"],
                          output_names=["logits"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    return buf.getvalue()


def _run_onnx(blob: bytes, x: Tensor) -> Tensor:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(["logits"], {"images": x.numpy()})[0])


def _torchscript_bytes(model: nn.Module, example: Tensor) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, (example,), check_trace=False), buf)
    return buf.getvalue()


def _run_torchscript(blob: bytes, x: Tensor) -> Tensor:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(io.BytesIO(blob), map_location="cpu")
        return loaded(x)


def export_run(path: str | Path, fmt: str, out: str | Path | None = None, which: str = "last",
               overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Export a run's classifier to `out` (default: RUN_DIR/model.onnx or model.pt next to
    the run) and check it on real test images; returns {out, format, max_abs_diff, n, shape}.
    TrainlabError when the exported model disagrees by more than TOLERANCE."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r}).")
    cfg, ckpt, p = load_classifier_run(path, which, overrides)
    run_dir = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    out = Path(out) if out else run_dir / f"model{FORMATS[fmt]}"
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name, e.g. "
                          f"{out / ('model' + FORMATS[fmt])}.")
    data, method = load_for_eval(cfg, ckpt, p)
    n = min(CHECK_IMAGES, len(data.split("test")[1]))
    if n == 0:
        raise ConfigError(f"The test split of {p}'s data is empty: export has no images to "
                          f"check the exported model on.")
    x_u8 = split_images(data, "test", range(n))  # [n, C, H, W] uint8, CPU
    model = method.model.float().cpu().eval()
    wrapped = PixelModel(model, data.mean, data.std).eval()
    with torch.no_grad():
        reference = model(normalize(data.mean, data.std, x_u8))  # the original, as eval runs it
    example = x_u8[:TRACE_BATCH].float() / 255.0
    blob = (_onnx_bytes if fmt == "onnx" else _torchscript_bytes)(wrapped, example)
    got = (_run_onnx if fmt == "onnx" else _run_torchscript)(blob, x_u8.float() / 255.0)
    diff = float((got.float() - reference.float()).abs().max())
    if not diff <= TOLERANCE:  # also catches NaN
        raise TrainlabError(
            f"The exported {fmt} model disagrees with the original on {n} test images: max "
            f"abs logit difference {diff:.3g} > {TOLERANCE:g}. Nothing was written. Try the "
            f"other --format, or report this model ({cfg.model.name}) as an export bug.")
    atomic_write_bytes(out, lambda f: f.write(blob))
    return {"out": out, "format": fmt, "max_abs_diff": diff, "n": n,
            "shape": ["N", data.channels, data.height, data.width],
            "num_classes": data.num_classes, "checkpoint": p}

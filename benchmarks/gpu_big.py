"""GPU headline numbers (issue 12, goal 5): the card's bf16 matmul rate, ViT-S/16 at 224 px
(bf16 + torch.compile + channels_last) training images/s and MFU, ResNet-50 images/s.

MFU = achieved training FLOP/s / the bf16 matmul rate measured on this card in the same run
(FLOPs per step counted by torch.utils.flop_counter on one forward + backward). `--tiny` runs
the same code with tiny sizes on a CPU (smoke test).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import fresh_model, machine, sync, time_bare, time_trainer  # noqa: I001
from torch.utils.flop_counter import FlopCounterMode

from trainlab.config.schema import ModelConfig
from trainlab.data.augment import AugmentSpec
from trainlab.models import ImageSpec

FLIP = AugmentSpec(crop_padding=0, flip=True, rotate_deg=0.0, brightness=0.0, contrast=0.0)


def matmul_tflops(device: torch.device, n: int, dtype: torch.dtype, reps: int) -> float:
    """Measured dense matmul rate, TFLOP/s: n x n @ n x n in `dtype`, `reps` times."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def train_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one forward + backward of `model` on batch (x, y) (counted, not estimated)."""
    with FlopCounterMode(display=False) as fc:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.is_cuda):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def bench(name: str, mcfg: ModelConfig, spec: ImageSpec, device: torch.device, batch: int,
          steps: int, compile_: bool, channels_last: bool, peak: float, tmp: Path) -> str:
    """One markdown row: bare and trainlab img/s, trainlab/bare, TFLOP/s and MFU (bare)."""
    n = (steps + 3) * batch
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, spec.channels, spec.height, spec.width), generator=g,
                      dtype=torch.uint8).to(device)
    y = torch.randint(0, spec.num_classes, (n,), generator=g).to(device)
    precision = "bf16" if device.type == "cuda" else "fp32"
    model, opt = fresh_model(mcfg, spec, device, channels_last=channels_last)
    xb = x[:batch].float().div(255)
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    flops = train_flops(model, xb, y[:batch]) / batch  # per image
    step_fn = torch.compile(model) if compile_ else None
    t0 = time.perf_counter()
    time_bare(model, opt, x, y, batch, 3, precision, channels_last, step_fn)  # warm-up/compile
    warm = time.perf_counter() - t0
    bare = time_bare(model, opt, x, y, batch, steps, precision, channels_last, step_fn)
    wrap = torch.compile if compile_ else None
    time_trainer(model, opt, x, y, batch, 3, FLIP, tmp, precision, channels_last, wrap)
    ours = time_trainer(model, opt, x, y, batch, steps, FLIP, tmp, precision, channels_last, wrap)
    tflops = bare * flops / 1e12
    return (f"| {name} | {spec.height}px | {batch} | {precision} | {compile_} | {channels_last} "
            f"| {bare:.0f} | {ours:.0f} | {ours / bare:.3f} | {flops / 1e9:.2f} | {tflops:.0f} "
            f"| {100 * tflops / peak:.1f}% | {warm:.0f}s |")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU (smoke test)")
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tiny = args.tiny or device.type == "cpu"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    print(f"machine: {machine()}")
    n, reps = (256, 2) if tiny else (8192, 50)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    peak = matmul_tflops(device, n, dtype, reps)
    print(f"measured {str(dtype).split('.')[-1]} matmul {n}x{n}: {peak:.1f} TFLOP/s (the MFU "
          f"denominator)\n")
    size, classes, batch = (32, 10, 4) if tiny else (224, 1000, 256)
    steps = 2 if tiny else args.steps
    vit = ModelConfig(name="vit_small", patch_size=16 if not tiny else 8, pool="cls")
    resnet = ModelConfig(name="resnet18" if tiny else "resnet50")  # tiny: the same code path
    runs = [("vit_small/16", vit, True, True), (resnet.name, resnet, False, True)]
    if not tiny:
        runs.append(("resnet50", ModelConfig(name="resnet50"), True, True))
    print("| model | size | batch | precision | compile | channels_last | bare img/s | "
          "trainlab img/s | ratio | GFLOP/img (train) | TFLOP/s | MFU | warm-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, mcfg, comp, cl in runs:
            if tiny and comp:
                comp = False  # compile on the CPU costs minutes: covered by the GPU run
            spec = ImageSpec(3, size, size, classes)
            print(bench(name, mcfg, spec, device, batch, steps, comp, cl, peak, Path(tmp)),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

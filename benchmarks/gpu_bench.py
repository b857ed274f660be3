"""GPU checks and timings in one short run (see benchmarks/gpu.sh); `--tiny` runs it on a CPU.

For each model (cnn, resnet18, vit_tiny) and precision setting (fp32, bf16, bf16 +
channels_last for CNNs, bf16 + torch.compile) it prints training images/s of the bare step and
of trainlab's loop (DeviceLoader with on-device augmentation, metrics, lr schedule) on
synthetic 3x32x32 data, and their ratio. It also checks that the integer crop+flip
augmentation is exact on the device and that fp16 with GradScaler trains.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from common import fresh_model, machine, sync, time_bare, time_trainer  # noqa: I001

from trainlab.config.schema import ModelConfig
from trainlab.data.augment import AugmentSpec, apply_augment, sample_params
from trainlab.models import ImageSpec

MODELS = {
    "cnn": ModelConfig(name="cnn"),
    "resnet18": ModelConfig(name="resnet18"),
    "vit_tiny": ModelConfig(name="vit_tiny", patch_size=4),
}
AUG = AugmentSpec(crop_padding=4, flip=True, rotate_deg=0.0, brightness=0.0, contrast=0.0)


def check_augment_exact(device: torch.device) -> str:
    """Integer crop + flip on the device equals F.pad + slicing, bit for bit."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), generator=g, dtype=torch.uint8)
    params = sample_params(AUG, 64, g)
    out = apply_augment(x.to(device).float() / 255, params.to(device), AUG).cpu()
    ref = torch.empty_like(out)
    padded = F.pad(x.float() / 255, (4, 4, 4, 4))
    for i in range(64):
        dx, dy, flip = (int(v) for v in params[i, :3])
        img = padded[i, :, 4 + dy:36 + dy, 4 + dx:36 + dx]
        ref[i] = img.flip(-1) if flip else img
    if torch.equal(out, ref):
        return "exact"
    err = float((out - ref).abs().max())  # CUDA's nearest grid_sample: float rounding only
    return f"same pixels (max diff {err:.1e})" if err < 1e-6 else f"MISMATCH max {err}"


def check_fp16(device: torch.device, steps: int) -> str:
    """A few fp16 steps with GradScaler lower the loss on a fixed batch."""
    model, opt = fresh_model(ModelConfig(name="cnn"), ImageSpec(3, 32, 32, 10), device)
    scaler = torch.amp.GradScaler(device.type)
    x, y = torch.randn(32, 3, 32, 32, device=device), torch.randint(0, 10, (32,), device=device)
    losses = []
    for _ in range(max(steps, 3)):
        with torch.autocast(device.type, dtype=torch.float16):
            loss = F.cross_entropy(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return f"ok ({losses[0]:.3f} -> {losses[-1]:.3f})" if losses[-1] < losses[0] else "no progress"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tiny", action="store_true", help="tiny sizes, for a CPU smoke test")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        args.batch, args.steps = 8, 2
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    print(f"machine: {machine()}")
    print(f"device {device}, batch {args.batch}, {args.steps} timed steps, synthetic 3x32x32")
    print(f"augment crop+flip on device: {check_augment_exact(device)}")
    print(f"fp16 + GradScaler: {check_fp16(device, args.steps)}")
    spec = ImageSpec(3, 32, 32, 10)
    n = (args.steps + 2) * args.batch
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    settings = [("fp32", False, False), ("bf16", False, False), ("bf16", True, False),
                ("bf16", False, True)]
    print("\n| model | precision | channels_last | compile | bare img/s | trainlab img/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, mcfg in MODELS.items():
            for precision, cl, comp in settings:
                if cl and name.startswith("vit"):
                    continue
                if args.tiny and (comp or (precision != "fp32" and name != "cnn")):
                    continue  # CPU smoke test (bf16 is emulated and slow on most CPUs); compile
                    # is covered by tests/test_distributed.py
                if comp and name != "cnn":
                    continue  # compile is timed on ViT-S/16 in gpu_big.py (minutes of device time)
                model, opt = fresh_model(mcfg, spec, device, channels_last=cl)
                step_fn = torch.compile(model) if comp else None
                # warm-up (compilation, cudnn autotuning), then time
                time_bare(model, opt, x, y, args.batch, 2, precision, cl, step_fn)
                bare = time_bare(model, opt, x, y, args.batch, args.steps, precision, cl, step_fn)
                wrap = torch.compile if comp else None
                time_trainer(model, opt, x, y, args.batch, 2, AUG, Path(tmp), precision, cl, wrap)
                ours = time_trainer(model, opt, x, y, args.batch, args.steps, AUG, Path(tmp),
                                    precision, cl, wrap)
                sync(device)
                print(f"| {name} | {precision} | {cl} | {comp} | {bare:.0f} | {ours:.0f} | "
                      f"{ours / bare:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput: trainlab's loop vs the bare model step vs a torch DataLoader + PIL pipeline.

All three train the same model on the same Fashion-MNIST images in the same process, in
alternating rounds, and report images/s and the ratio to the bare step:

  bare      pre-normalized float batches already in memory: forward, loss, backward, step.
  trainlab  Trainer.fit over DeviceLoader: uint8 on the device, per-sample crop+flip, metrics.
  pil       torch DataLoader over PIL images with torchvision RandomCrop+Flip+ToTensor+Normalize
            (the usual recipe), 2 workers.

usage: python benchmarks/throughput.py [--model cnn] [--batch 256] [--steps 30] [--rounds 3]
                                      [--clock wall|cpu]

--clock cpu measures CPU seconds of this process with 1 thread (`time.process_time`) instead of
wall time: stable (+-3%) while other processes share the cores, where wall-clock img/s swings
by +-30%. The DataLoader + PIL pipeline does its work in worker processes, which this clock
does not see, so it is left out then.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import fresh_model, machine, sync, time_bare, time_trainer  # noqa: I001

from trainlab.config.schema import DataConfig, ModelConfig
from trainlab.data.augment import resolve_augment
from trainlab.data.sources import load_data
from trainlab.models import ImageSpec


def ours(args, x, y, spec, device, tmp: Path) -> float:
    model, opt = fresh_model(ModelConfig(name=args.model), spec, device)
    aug = resolve_augment(DataConfig(name="fashion-mnist"))
    return time_trainer(model, opt, x, y, args.batch, args.steps + 1, aug, tmp, clock=args.timer)


def bare(args, x, y, spec, device) -> float:
    model, opt = fresh_model(ModelConfig(name=args.model), spec, device)
    return time_bare(model, opt, x, y, args.batch, args.steps + 1, clock=args.timer)


def pil(args, x, y, spec, device) -> float:
    """img/s with a torch DataLoader over PIL images and torchvision transforms."""
    from PIL import Image
    from torchvision import transforms as T

    model, opt = fresh_model(ModelConfig(name=args.model), spec, device)
    tf = T.Compose([T.RandomCrop(28, padding=2), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.286,), (0.353,))])
    n = (args.steps + 1) * args.batch
    imgs = [Image.fromarray(a) for a in x[:n, 0].cpu().numpy()]
    labels = y[:n].cpu().tolist()

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return tf(imgs[i]), labels[i]

    dl = torch.utils.data.DataLoader(DS(), batch_size=args.batch, shuffle=True, num_workers=2,
                                     drop_last=True, pin_memory=device.type == "cuda")
    t = time.perf_counter()
    for xb, yb in dl:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    return n / (time.perf_counter() - t)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="cnn")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-pil", action="store_true")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = p.parse_args()
    if args.clock == "cpu":
        torch.set_num_threads(1)
        args.no_pil = True
    args.timer = time.process_time if args.clock == "cpu" else time.perf_counter
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_data(DataConfig(name="fashion-mnist", val_fraction=0.0))
    x, y = data.x_train.to(device), data.y_train.to(device)
    spec = ImageSpec(1, 28, 28, 10)
    print(f"machine: {machine()}")
    print(f"model {args.model}, batch {args.batch}, {args.steps} steps x {args.rounds} rounds, "
          f"Fashion-MNIST 1x28x28, device {device}, clock {args.clock}"
          f"{' (CPU seconds, 1 thread)' if args.clock == 'cpu' else ''}")
    res: dict[str, list[float]] = {"bare": [], "trainlab": [], "pil": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            res["bare"].append(bare(args, x, y, spec, device))
            res["trainlab"].append(ours(args, x, y, spec, device, Path(tmp)))
            if not args.no_pil:
                res["pil"].append(pil(args, x, y, spec, device))
            print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:.0f}" for k, v in res.items() if v),
                  flush=True)
    base = statistics.median(res["bare"])
    print("\n| pipeline | img/s (median) | vs bare step |\n|---|---|---|")
    for k, v in res.items():
        if v:
            m = statistics.median(v)
            print(f"| {k} | {m:.0f} | {m / base:.3f} |")
    print(f"ratio trainlab/bare {statistics.median(res['trainlab']) / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

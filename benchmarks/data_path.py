"""Data-path throughput: augmented images/s of the in-memory path and of the file-backed
DataLoader path, beside the training throughput of the small CNN on the same data, in one run.

  in-memory   DeviceLoader: uint8 on the device, crop (2 px) + flip as per-sample tensor ops
  dataloader  FileLoader: torch DataLoader workers, torchvision.transforms.v2
              RandomResizedCrop + flip per sample, uint8 to the device, normalize there
  model       forward + backward + AdamW of `cnn` (batch 256) on ready batches

The in-memory path should produce at least 5x what the model consumes.
usage: python benchmarks/data_path.py [--batches 100] [--workers N]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from common import fresh_model, machine, time_bare  # noqa: I001

from trainlab.config.schema import DataConfig, ModelConfig
from trainlab.data.augment import resolve_augment
from trainlab.data.file_loader import FileLoader, default_num_workers, resolve_pipeline
from trainlab.data.loader import DeviceLoader
from trainlab.data.sources import load_data
from trainlab.models import ImageSpec


def drain(loader, batches: int) -> float:
    """img/s of producing `batches` training batches (epoch 0, on the device)."""
    n = 0
    t = time.perf_counter()
    for i, (x, *_) in enumerate(loader.epoch(0)):
        n += len(x)
        if i + 1 == batches:
            break
    if x.is_cuda:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = DataConfig(name="fashion-mnist")
    data = load_data(cfg)
    x, y = data.x_train, data.y_train
    workers = args.workers if args.workers is not None else default_num_workers()
    print(f"machine: {machine()}")
    print(f"Fashion-MNIST train {tuple(x.shape)}, batch {args.batch}, device {device}, "
          f"DataLoader workers {workers}")
    mem = DeviceLoader(x.to(device), y.to(device), args.batch, [0.286], [0.353], shuffle=True,
                       augment=resolve_augment(cfg))
    pipe = resolve_pipeline(DataConfig(name="fashion-mnist", crop_scale=[0.35, 1.0]),
                            tuple(x.shape), train=True)
    files = FileLoader(x, y, args.batch, [0.286], [0.353], shuffle=True, pipeline=pipe,
                       device=device, num_workers=workers)
    drain(mem, 2)
    r_mem = drain(mem, args.batches)
    drain(files, 2)
    r_files = drain(files, max(5, args.batches // 5))
    model, opt = fresh_model(ModelConfig(name="cnn"), ImageSpec(1, 28, 28, 10), device)
    xd, yd = x.to(device), y.to(device)
    time_bare(model, opt, xd, yd, args.batch, 2)
    r_model = time_bare(model, opt, xd, yd, args.batch, 10)
    print("\n| path | img/s | x model consumption |\n|---|---|---|")
    for name, r in (("in-memory (tensor ops)", r_mem), ("DataLoader + transforms.v2", r_files),
                    ("model: cnn train step", r_model)):
        print(f"| {name} | {r:.0f} | {r / r_model:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time to accuracy (issue 12, goal 2): trainlab's recipe against what a student writes in plain
PyTorch, both as real processes on the same machine, one after the other, timed from just before
each process starts until the moment each epoch's validation accuracy is printed (start-up, data
loading, training, evaluation and checkpoints included).

  trainlab   `python -m trainlab train RECIPE run.dir=<tmp> run.progress=false ...`; val accuracy
             per epoch from its metrics.jsonl, test accuracy from its summary.json. Default
             recipe: recipes/fashion_fast.yaml (recipes/fashion_cnn.yaml while that is missing).
  baseline   this file with --baseline-only: a torch DataLoader (2 workers) over a Dataset
             applying torchvision.transforms.v2 RandomCrop(28, padding=2) + flip + ToDtype +
             Normalize per image, a 0.39 M-parameter 4-conv CNN at 28x28 (32-32-pool-64-64-pool,
             fc 104, fc 10), SGD nesterov 0.9 (lr 0.05, weight decay 5e-4: usual picks, not
             tuned), cosine lr per step, label smoothing 0.1, batch 128, 7 epochs; 5,000
             validation images drawn at random (seed 0) from the 60,000 training
             images. trainlab carves its own stratified split (data.val_fraction, 6,000 by
             default), so the val columns are measured on different images; the 10,000 test
             images are the same for both.

Both read the same Fashion-MNIST IDX files (/usr/share/datasets/fashion-mnist from the Debian
package dataset-fashion-mnist, or --data-root) and inherit the same environment, so the same
thread setting (torch's default unless OMP_NUM_THREADS is exported); the threads each used are
printed. The report: a table per epoch, the wall time to first reach each val level, the test
accuracies and process walls, trainlab's time to 94% over the baseline's whole run (the issue's
goal: <= 0.52), and whether trainlab is ahead at every level.

usage: python benchmarks/time_to_accuracy.py [--recipe R] [--baseline-epochs 7]
           [--levels 92,93,94] [--data-root DIR] [--tiny] [key=value ...]
  key=value   passed on to `trainlab train`
  --tiny      smoke test (< 1 min): both on a copy of the first 1,200 training and 1,000 test
              images, 1 epoch each; its numbers mean nothing
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from trainlab.data.sources.idx import FASHION_MNIST_ROOT, find_idx_files, load_idx_set
from trainlab.engine.sinks import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training pixels in [0, 1]
EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+\s")
TINY_TRAIN, TINY_TEST = 1200, 1000


# ---------------------------------------------------------------- the baseline (child process)

class Images(Dataset):
    """uint8 images [N, 1, 28, 28] and labels [N], each image through `tf` when fetched."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, tf: v2.Transform) -> None:
        self.x, self.y, self.tf = x, y, tf

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.tf(self.x[i]), int(self.y[i])


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def baseline_net() -> nn.Module:
    """[B, 1, 28, 28] -> [B, 10] logits; 392,482 parameters."""
    return nn.Sequential(block(1, 32), block(32, 32), nn.MaxPool2d(2),
                         block(32, 64), block(64, 64), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, 104), nn.ReLU(inplace=True),
                         nn.Linear(104, 10))


def accuracy(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    right = 0
    with torch.no_grad():
        for xb, yb in loader:
            right += (model(xb.to(device)).argmax(1).cpu() == yb).sum().item()
    model.train()
    return right / len(loader.dataset)


def emit(**record: object) -> None:
    print(json.dumps(record), flush=True)


def run_baseline(root: Path, epochs: int, val_size: int, device: torch.device) -> None:
    """Train and evaluate the plain-PyTorch baseline, printing one JSON line per event."""
    files = find_idx_files(root, "FashionMNIST")
    if files is None:
        raise SystemExit(f"Fashion-MNIST IDX files not found in {root}")
    x, y, x_test, y_test = (torch.from_numpy(a) for a in load_idx_set(files, (28, 28), 10))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    val, tr = perm[:val_size], perm[val_size:]
    torch.manual_seed(0)
    norm = [v2.ToDtype(torch.float32, scale=True), v2.Normalize([MEAN], [STD])]
    aug = v2.Compose([v2.RandomCrop(28, padding=2), v2.RandomHorizontalFlip(), *norm])
    plain = v2.Compose(norm)
    pin = device.type == "cuda"
    train_dl = DataLoader(Images(x[tr], y[tr], aug), batch_size=128, shuffle=True,
                          num_workers=2, pin_memory=pin)
    val_dl = DataLoader(Images(x[val], y[val], plain), batch_size=512, num_workers=2,
                        pin_memory=pin)
    test_dl = DataLoader(Images(x_test, y_test, plain), batch_size=512, num_workers=2,
                         pin_memory=pin)
    model = baseline_net().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(train_dl))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    emit(kind="start", params=sum(p.numel() for p in model.parameters()),
         threads=torch.get_num_threads(), device=str(device), train=len(tr), val=len(val),
         test=len(y_test))
    for epoch in range(1, epochs + 1):
        total, n = 0.0, 0
        for xb, yb in train_dl:
            xb, yb = xb.to(device, non_blocking=pin), yb.to(device, non_blocking=pin)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + loss.item() * len(yb), n + len(yb)
        emit(kind="epoch", epoch=epoch, train_loss=total / n,
             val_acc=accuracy(model, val_dl, device))
    emit(kind="test", test_acc=accuracy(model, test_dl, device))


# ---------------------------------------------------------------- timing the two processes

def timed_lines(cmd: list[str], tail: list[str]) -> Iterator[tuple[float, str | None]]:
    """Start `cmd` (stderr into stdout) and yield (seconds since just before the start, line)
    as each line arrives; the last yield is (process wall, None) after a clean exit. Keeps the
    last lines in `tail`; exits with them if the process fails."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, bufsize=1)
    assert p.stdout is not None
    for line in p.stdout:
        tail[:] = [*tail[-40:], line.rstrip("\n")]
        yield time.perf_counter() - t0, line.rstrip("\n")
    p.wait()
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)}\nexited with {p.returncode}:\n" + "\n".join(tail))
    yield wall, None


def run_trainlab(recipe: str, run_dir: Path, extra: list[str]) -> dict:
    """Train the recipe; returns epochs [(epoch, val_acc, wall s, ema val acc or None)],
    summary, header and process wall."""
    cmd = [sys.executable, "-m", "trainlab", "train", recipe, f"run.dir={run_dir}",
           "run.progress=false", "run.tensorboard=false", "run.report=false", *extra]
    arrived: dict[int, float] = {}
    header, tail, wall = "", [], math.nan
    for t, line in timed_lines(cmd, tail):
        if line is None:
            wall = t
        elif line.startswith("trainlab: ") and not header:
            header = line
        elif m := EPOCH_LINE.match(line):
            arrived[int(m.group(1))] = t
            print(f"  trainlab {t:7.1f} s  {line}", flush=True)
    records = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "epoch"]
    if sorted(arrived) != [r["epoch"] for r in records]:
        raise SystemExit(f"trainlab printed epochs {sorted(arrived)} but metrics.jsonl holds "
                         f"{[r['epoch'] for r in records]}:\n" + "\n".join(tail))
    epochs = [(r["epoch"], r.get("val_acc"), arrived[r["epoch"]], r.get("val_ema_acc"))
              for r in records]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"epochs": epochs, "summary": summary, "header": header, "wall": wall}


def run_baseline_process(root: Path, epochs: int, val_size: int, device: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--baseline-only",
           f"--baseline-epochs={epochs}", f"--data-root={root}", f"--val-size={val_size}",
           f"--device={device}"]
    out: dict = {"epochs": [], "wall": math.nan}
    tail: list[str] = []
    for t, line in timed_lines(cmd, tail):
        if line is None:
            out["wall"] = t
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a warning on stderr
        if not isinstance(rec, dict):
            continue
        if rec.get("kind") == "epoch":
            out["epochs"].append((rec["epoch"], rec["val_acc"], t, None))
            print(f"  baseline {t:7.1f} s  epoch {rec['epoch']}/{epochs}  train_loss "
                  f"{rec['train_loss']:.4f}  val_acc {rec['val_acc']:.4f}", flush=True)
        else:
            out.update(rec)
    return out


# ---------------------------------------------------------------- the report

def first_reach(epochs: list[tuple], level: float) -> float | None:
    """Wall s at the first epoch whose val acc >= level (a fraction), or None."""
    return next((t for _, acc, t, _ in epochs if acc is not None and acc >= level - 1e-12), None)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def fmt(v: float | None, spec: str = ".1f", none: str = "not reached") -> str:
    return none if v is None else format(v, spec)


def report(tl: dict, bl: dict, levels: list[float], baseline_epochs: int) -> None:
    ema = any(e[3] is not None for e in tl["epochs"])
    print("\nwall s = seconds from just before the process started until the epoch's val accuracy"
          " was printed\n")
    print("| epoch | trainlab val acc | trainlab wall s | baseline val acc | baseline wall s |"
          + (" trainlab EMA val acc |" if ema else ""))
    print("|---|---|---|---|---|" + ("---|" if ema else ""))
    t_ep, b_ep = {e[0]: e for e in tl["epochs"]}, {e[0]: e for e in bl["epochs"]}
    for k in range(1, max([*t_ep, *b_ep]) + 1):
        t, b = t_ep.get(k), b_ep.get(k)
        row = [str(k), fmt(t and t[1], ".4f", "-"), fmt(t and t[2], ".1f", "-"),
               fmt(b and b[1], ".4f", "-"), fmt(b and b[2], ".1f", "-")]
        if ema:
            row.append(fmt(t and t[3], ".4f", "-"))
        print("| " + " | ".join(row) + " |")
    print("\n| val level | trainlab wall s | baseline wall s | trainlab / baseline |")
    print("|---|---|---|---|")
    ahead, both = True, 0
    for lv in levels:
        ta, ba = first_reach(tl["epochs"], lv / 100), first_reach(bl["epochs"], lv / 100)
        ratio = "-"
        if ta is not None and ba is not None:
            both += 1
            ratio = f"{ta / ba:.2f}"
            ahead &= ta < ba
        elif ba is not None:
            ahead = False  # the baseline reaches a level trainlab does not
        print(f"| {lv:g}% | {fmt(ta)} | {fmt(ba)} | {ratio} |")
    s = tl["summary"]
    print("\n| | trainlab | baseline |\n|---|---|---|")
    print(f"| test acc (the same {bl['test']:,} images) | {fmt(s.get('test_acc'), '.4f', '-')} | "
          f"{fmt(bl.get('test_acc'), '.4f', '-')} |")
    print(f"| process wall s | {tl['wall']:.1f} | {bl['wall']:.1f} |")
    print(f"| epochs | {s.get('epochs')} | {len(bl['epochs'])} |")
    print(f"| parameters | {s.get('params'):,} | {bl.get('params', 0):,} |")
    t94 = first_reach(tl["epochs"], 0.94)
    goal = f"{t94 / bl['wall']:.2f}" if t94 is not None else "not reached (no 94% val)"
    whole = f"baseline process wall ({plural(baseline_epochs, 'epoch')})"
    print(f"\ntrainlab time to 94% val / {whole}: {goal} (goal: <= 0.52)")
    verdict = "no" if not ahead else "yes" if both else "no level reached by both"
    print(f"trainlab ahead at every level both reach: {verdict}")


# ---------------------------------------------------------------- main

def write_idx(path: Path, arr: np.ndarray) -> None:
    """A uint8 array as an IDX file: 00 00 08 ndim, big-endian uint32 sizes, the bytes."""
    path.write_bytes(bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
                     + np.ascontiguousarray(arr, np.uint8).tobytes())


def tiny_copy(root: Path, dest: Path) -> Path:
    """The first TINY_TRAIN training and TINY_TEST test images of `root` as IDX files in dest."""
    files = find_idx_files(root, "FashionMNIST")
    assert files is not None
    x, y, xt, yt = load_idx_set(files, (28, 28), 10)
    dest.mkdir()
    for name, arr in (("train-images-idx3-ubyte", x[:TINY_TRAIN, 0]),
                      ("train-labels-idx1-ubyte", y[:TINY_TRAIN]),
                      ("t10k-images-idx3-ubyte", xt[:TINY_TEST, 0]),
                      ("t10k-labels-idx1-ubyte", yt[:TINY_TEST])):
        write_idx(dest / name, arr)
    return dest


def default_recipe() -> str:
    fast = ROOT / "recipes" / "fashion_fast.yaml"
    return str(fast if fast.is_file() else ROOT / "recipes" / "fashion_cnn.yaml")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=None, help="trainlab recipe (default: fashion_fast)")
    p.add_argument("--baseline-epochs", type=int, default=7)
    p.add_argument("--levels", default="92,93,94", help="val accuracy levels, percent")
    p.add_argument("--data-root", default=None, help=f"IDX folder (default {FASHION_MNIST_ROOT})")
    p.add_argument("--tiny", action="store_true", help="smoke test on a small copy, 1 epoch")
    p.add_argument("--baseline-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--val-size", type=int, default=5000, help=argparse.SUPPRESS)
    p.add_argument("--device", default=None, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()
    root = Path(args.data_root or FASHION_MNIST_ROOT).resolve()
    if args.baseline_only:
        dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        run_baseline(root, args.baseline_epochs, args.val_size, torch.device(dev))
        return 0
    if find_idx_files(root, "FashionMNIST") is None:
        p.error(f"Fashion-MNIST IDX files not found in {root}: apt-get install "
                "dataset-fashion-mnist, or pass --data-root=/folder/with/the/four/files")
    for o in args.overrides:
        if not re.fullmatch(r"[a-z_]+\.[a-z_0-9]+=.*", o):
            p.error(f"extra arguments are trainlab overrides like train.epochs=8, got {o!r}")
        if o.startswith("data.root="):
            p.error(f"{o!r}: pass --data-root instead, so that both runs read the same files")
        if o.startswith("run.dir="):
            p.error(f"{o!r}: the benchmark runs trainlab in a temporary run.dir of its own")
    try:
        levels = [float(v) for v in args.levels.split(",")]
    except ValueError:
        p.error(f"--levels takes percentages separated by commas, got {args.levels!r}")
    if not all(0 <= v <= 100 for v in levels) or args.baseline_epochs < 1:
        p.error("--levels must lie in 0..100 and --baseline-epochs be at least 1")
    from common import machine  # here, not at the top: the baseline child need not import it

    recipe = str(Path(args.recipe).resolve()) if args.recipe else default_recipe()
    epochs, val_size = args.baseline_epochs, 5000
    extra = list(args.overrides)
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tta-") as tmp:
        if args.tiny:
            root = tiny_copy(root, Path(tmp) / "data")
            epochs, val_size = 1, TINY_TRAIN // 10
            extra = ["train.epochs=1", "sched.warmup_epochs=0", *extra]
        extra = [f"data.root={root}", *extra]
        print(f"trainlab: {recipe} {' '.join(extra)}", flush=True)
        tl = run_trainlab(recipe, Path(tmp) / "run", extra)
        s = tl["summary"]
        print(f"baseline: plain PyTorch, {plural(epochs, 'epoch')} on {s['device']}", flush=True)
        bl = run_baseline_process(root, epochs, val_size, s["device"])
    print(f"\ntrainlab {tl['header'].removeprefix('trainlab: ')}")
    print(f"baseline: {bl['params'] / 1e6:.2f}M params, train/val/test {bl['train']}/{bl['val']}/"
          f"{bl['test']} (val: {bl['val']} random images, seed 0); device {bl['device']}, "
          f"{plural(bl['threads'], 'torch thread')}")
    if s.get("data") != "fashion-mnist":
        print(f"WARNING: the recipe trains on {s.get('data')}, not fashion-mnist: "
              "the comparison means nothing")
    print("The val sets differ (trainlab's stratified split vs the baseline's random one); the "
          "test set is the same.")
    report(tl, bl, levels, epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

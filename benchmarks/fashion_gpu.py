"""Fashion-MNIST time to 94% test accuracy on one GPU (issue 12, goal 5: <= 15 s).

Runs `trainlab train` on a recipe as a subprocess and reports the process wall time, the
training wall time, the epoch (and training seconds) at which validation accuracy first reached
94%, and the test accuracy at the end (selected on validation, test read once).

usage: python benchmarks/fashion_gpu.py RECIPE [key=value ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainlab.config.load import all_keys

TARGET = 0.94


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        quiet = [k for k in ("run.progress=false", "run.tensorboard=false", "run.report=false")
                 if k.split("=")[0] in all_keys()]
        cmd = [sys.executable, "-m", "trainlab", "train", *argv, f"run.dir={run}", *quiet]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
            print(proc.stdout[-2000:], proc.stderr[-3000:])
            return proc.returncode
        epochs = [json.loads(line) for line in (run / "metrics.jsonl").open()]
        epochs = [r for r in epochs if r.get("kind") == "epoch"]
        hit = next((r for r in epochs if (r.get("val_acc") or 0) >= TARGET), None)
        s = json.loads((run / "summary.json").read_text())
        print(proc.stdout.splitlines()[0])
        print(f"| {' '.join(argv)} | {s['test_acc']:.4f} | {s['best_val_acc']:.4f} | "
              f"{hit['epoch'] if hit else '-'} | {hit['wall_s'] if hit else float('nan'):.1f} | "
              f"{s['wall_s']:.1f} | {wall:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Two runs sharing a machine (issue 12, goal 4): each run's training wall time alone, two
started at the same moment under trainlab's thread policy, and two started together that each
insist on every core (`run.threads=<all CPUs>`: what every PyTorch process did before the
policy). Ratios are against the solo time measured in the same invocation.

usage: python benchmarks/sharing.py [--rounds 2] [key=value ...]   (default: the digits run)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine  # noqa: I001

WALL = re.compile(r"training wall time ([0-9.]+)s")


def start(tmp: Path, name: str, extra: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    return subprocess.Popen([sys.executable, "-m", "trainlab", "train", f"run.dir={tmp / name}",
                             "run.progress=false", "run.tensorboard=false", "run.report=false",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def wall(p: subprocess.Popen) -> tuple[float, str]:
    out, err = p.communicate()
    m = WALL.search(out)
    if p.returncode or not m:
        raise SystemExit(f"run failed ({p.returncode}):\n{out[-1500:]}\n{err[-1500:]}")
    header = next((line for line in out.splitlines() if "thread" in line), "")
    return float(m.group(1)), header.rsplit("device", 1)[-1].strip()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2)
    args, extra = p.parse_known_args()
    cpus = len(os.sched_getaffinity(0))
    print(f"machine: {machine()}")
    rows: dict[str, list[float]] = {"solo": [], "pair (policy)": [], "pair (all cores each)": []}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for r in range(args.rounds):
            s, notes["solo"] = wall(start(t, f"solo{r}", extra))
            rows["solo"].append(s)
            pair = [start(t, f"pol{r}-{i}", extra) for i in range(2)]
            res = [wall(q) for q in pair]
            rows["pair (policy)"] += [w for w, _ in res]
            notes["pair (policy)"] = res[0][1]
            greedy = [start(t, f"all{r}-{i}", [*extra, f"run.threads={cpus}"]) for i in range(2)]
            res = [wall(q) for q in greedy]
            rows["pair (all cores each)"] += [w for w, _ in res]
            notes["pair (all cores each)"] = res[0][1]
            print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:.1f}s" for k, v in rows.items()),
                  flush=True)
    solo = statistics.median(rows["solo"])
    print("\n| runs | training wall per run (median) | vs solo | threads (run header) |")
    print("|---|---|---|---|")
    for k, v in rows.items():
        m = statistics.median(v)
        print(f"| {k} | {m:.1f}s | {m / solo:.2f}x | {notes[k]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Logging sinks: metrics.jsonl + metrics.csv, TensorBoard, console. Only rank 0 writes.

The rank-0 rule is enforced here, in the writers: every sink is built with `is_main` and is a
no-op elsewhere, so the training loop can call them unconditionally.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainlab.files import atomic_write_text

CSV_COLUMNS = [
    "epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5",
    "img_per_s", "wall_s",
]


class MetricsFile:
    """Append-only `metrics.jsonl` (every record) and `metrics.csv` (one row per epoch)."""

    def __init__(self, run_dir: Path, is_main: bool, resume_step: int | None = None) -> None:
        self.is_main = is_main
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if not is_main:
            return
        records = read_jsonl(self.jsonl) if resume_step is not None else []
        # on resume, forget what was logged after the checkpoint: it will be logged again
        kept = [r for r in records if r.get("step", 0) <= (resume_step or 0)]
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in kept))
        self.rows = [r for r in kept if r.get("kind") == "epoch"]
        self._write_csv()

    def log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(_clean(record)) + "\n")
        if record.get("kind") == "epoch":
            self.rows.append(_clean(record))
            self._write_csv()

    def _write_csv(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: _fmt(r.get(k)) for k in CSV_COLUMNS})
        atomic_write_text(self.csv, buf.getvalue())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl; a torn last line (crash mid-write) is ignored."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _clean(r: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}


def _fmt(v: Any) -> Any:
    return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)


class TensorBoard:
    """Scalars to TensorBoard event files in `<run_dir>/tb` (rank 0 only)."""

    def __init__(self, run_dir: Path, is_main: bool, enabled: bool) -> None:
        self.writer = None
        if is_main and enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / "tb"))

    def log(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        kind, step = record.get("kind", "train"), record.get("step", 0)
        for k, v in record.items():
            if k not in ("kind", "step", "epoch") and isinstance(v, (int, float)) and v is not None:
                self.writer.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Console:
    """Progress bar on a terminal (tqdm), one line per epoch otherwise (logs, Slurm, CI)."""

    def __init__(self, is_main: bool, progress: bool) -> None:
        self.is_main = is_main
        self.use_bar = is_main and progress and sys.stderr.isatty()
        self.bar = None

    def print(self, text: str) -> None:
        if self.is_main:
            if self.bar is not None:
                self.bar.write(text)
            else:
                print(text, flush=True)

    def start_epoch(self, epoch: int, epochs: int, total: int, start: int) -> None:
        if self.use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=f"epoch {epoch + 1}/{epochs}",
                            leave=False, dynamic_ncols=True, mininterval=0.5)

    def update(self, n: int, postfix: dict[str, str] | None = None) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclass
class Sinks:
    """Where the loop writes: the console, metrics.jsonl/csv and TensorBoard."""

    console: Console
    metrics: MetricsFile
    tb: TensorBoard

    @classmethod
    def for_run(cls, run_dir: Path, is_main: bool, progress: bool, tensorboard: bool,
                resume_step: int | None = None) -> Sinks:
        return cls(Console(is_main, progress), MetricsFile(run_dir, is_main, resume_step),
                   TensorBoard(run_dir, is_main, tensorboard))

    @classmethod
    def quiet(cls, run_dir: Path) -> Sinks:
        """Sinks that write nothing (benchmarks)."""
        return cls(Console(False, False), MetricsFile(run_dir, False),
                   TensorBoard(run_dir, False, False))

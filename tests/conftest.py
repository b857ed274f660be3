"""Shared test helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")

# Keep CPU results repeatable and the 2-core CI machine responsive.
torch.set_num_threads(min(2, os.cpu_count() or 1))
# Runs of this test session count only each other when they share the CPUs (dist/threads.py),
# not trainlab processes of other sessions on the same machine.
os.environ.setdefault("TRAINLAB_CPUSHARE_DIR", tempfile.mkdtemp(prefix="trainlab-cpushare-"))


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m trainlab ARGS` in a real process; returns the completed process."""
    return subprocess.run([sys.executable, "-m", "trainlab", *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def quick(tmp_path: Path, *extra: str) -> list[str]:
    """Overrides for a fast, quiet digits run in tmp_path (no report.html: tests of the report
    turn it back on with run.report=true)."""
    return [f"run.dir={tmp_path}", "run.progress=false", "run.tensorboard=false",
            "run.report=false", *extra]


needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist; make test does it)",
)


def stop_after_first_epoch(monkeypatch: pytest.MonkeyPatch):
    """Make the next run stop right after epoch 1 as if SIGTERM had arrived then (it saves a
    checkpoint and raises Interrupted). Returns a function that restores normal training."""
    import signal

    from trainlab.engine import trainer as trainer_mod

    orig = trainer_mod.Trainer._end_epoch

    def end_epoch_then_stop(self, state, *a, **kw):
        orig(self, state, *a, **kw)
        self.stop.signum = signal.SIGTERM

    monkeypatch.setattr(trainer_mod.Trainer, "_end_epoch", end_epoch_then_stop)
    return lambda: monkeypatch.setattr(trainer_mod.Trainer, "_end_epoch", orig)

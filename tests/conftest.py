"""Shared test helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from slurm_cluster import wait_for

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")

# Keep CPU results repeatable and the 2-core CI machine responsive.
torch.set_num_threads(min(2, os.cpu_count() or 1))
# Runs of this test session count only each other when they share the CPUs (dist/threads.py),
# not trainlab processes of other sessions on the same machine.
os.environ.setdefault("TRAINLAB_CPUSHARE_DIR", tempfile.mkdtemp(prefix="trainlab-cpushare-"))


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 900,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m trainlab ARGS` in a real process; returns the completed process. The
    generous `timeout` only matters when something hangs: the test then fails loudly, naming
    the command and showing what it printed."""
    try:
        return subprocess.run([sys.executable, "-m", "trainlab", *args], cwd=cwd or ROOT,
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) \
            else (e.stdout or "")
        err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) \
            else (e.stderr or "")
        raise AssertionError(f"`trainlab {' '.join(args)}` did not finish within {timeout:.0f} "
                             f"s:\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}") from None


def wait_for_train_records(procs: list[subprocess.Popen], metrics: Path, n: int,
                           timeout: float = 900) -> None:
    """Poll `metrics` until it holds >= `n` train records. Fails loudly (and kills `procs`)
    when one of them exits first or the generous deadline passes; never carries on silently."""
    def ready() -> bool:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{p.args} exited with {p.returncode} before {n} train "
                                     f"steps were logged in {metrics}")
        return metrics.exists() and metrics.read_text().count('"train"') >= n

    try:
        wait_for(ready, timeout, f"{n} train records in {metrics}", every=0.05)
    except AssertionError:
        for p in procs:
            if p.poll() is None:
                p.kill()
            out, err = p.communicate()
            print(f"--- {p.args}\n{(err or '')[-3000:]}")
        raise


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

"""`trainlab sweep --local`: train a sweep's points on this machine, one after another in this
process, or `--parallel N` at once as child processes (each `trainlab train POINT/job.yaml`,
its output in POINT/train.log). Parallel points divide the CPUs between them from the start
(`TRAINLAB_SWEEP_PARALLEL` reaches each child's thread plan, `dist.threads`); finished points
are skipped when the same command runs again, unfinished ones continue from their checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from trainlab.config.schema import Config
from trainlab.dist.threads import PARALLEL_ENV
from trainlab.errors import Interrupted, TrainlabError
from trainlab.launch.job import train_job
from trainlab.launch.submit import JOB_CONFIG

LOG = "train.log"  # a parallel point's stdout + stderr, in its folder


def _finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file()


def run_local(sweep_dir: Path, points: list[Any], configs: list[Config],
              parallel: int = 1) -> list[str]:
    """Train the points here; returns "done" or "failed" per point. `points` are
    `sweep.Point`s (index, dir). Raises `Interrupted` when a signal stopped the sweep."""
    if parallel > 1:
        return _run_parallel(sweep_dir, points, parallel)
    status = []
    for p, cfg in zip(points, configs, strict=True):
        if _finished(sweep_dir / p.dir):
            print(f"[{p.index + 1}/{len(points)}] {p.dir}: already finished, skipped")
            status.append("done")
            continue
        missing = _unfinished_needs(sweep_dir, points, p)
        if missing:
            print(f"[{p.index + 1}/{len(points)}] {p.dir}: not trained: {missing}", flush=True)
            status.append("failed")
            continue
        print(f"[{p.index + 1}/{len(points)}] {p.dir}", flush=True)
        try:
            train_job(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, resume="auto")))
            status.append("done")
        except TrainlabError as e:
            if getattr(e, "exit_code", 2) >= 128:  # interrupted: stop the whole sweep
                raise
            print(f"trainlab: error in point {p.index} ({p.dir}): {e}", flush=True)
            status.append("failed")
    return status


def _unfinished_needs(sweep_dir: Path, points: list[Any], p: Any) -> str:
    """'' when every point `p` starts from (`p.needs`, launch.chain) has finished, else why."""
    by_index = {q.index: q for q in points}
    left = [j for j in p.needs if not _finished(sweep_dir / by_index[j].dir)]
    return (f"it starts from point{'s' if len(left) > 1 else ''} "
            f"{', '.join(map(str, left))}, which did not finish" if left else "")


def _last_error(log: Path) -> str:
    """The last `trainlab: error` line of a point's log (or its last line)."""
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errs = [ln for ln in lines if "trainlab: error" in ln]
    return (errs or lines or ["no output"])[-1][:300]


def _next_ready(sweep_dir: Path, points: list[Any], todo: list[Any], running: dict[int, Any],
                status: dict[int, str]) -> Any:
    """Take from `todo` the first point whose needs have finished; points whose needs can no
    longer finish (failed, or not trained) are marked failed on the way. None: all wait."""
    for p in list(todo):
        pending = [j for j in p.needs if j in running or any(q.index == j for q in todo)]
        if pending:
            continue
        todo.remove(p)
        missing = _unfinished_needs(sweep_dir, points, p)
        if not missing:
            return p
        status[p.index] = "failed"
        print(f"[{p.index + 1}/{len(points)}] {p.dir}: not trained: {missing}", flush=True)
    return None


def _run_parallel(sweep_dir: Path, points: list[Any], parallel: int) -> list[str]:
    """Keep up to `parallel` child processes training; on SIGINT/SIGTERM forward SIGTERM to
    them (each saves its checkpoint), wait for them, then raise `Interrupted`."""
    todo = []
    status = {p.index: "done" for p in points}
    for p in points:
        if _finished(sweep_dir / p.dir):
            print(f"[{p.index + 1}/{len(points)}] {p.dir}: already finished, skipped")
        else:
            todo.append(p)
    n = min(parallel, len(todo)) or 1
    env = {**os.environ, PARALLEL_ENV: str(n)}
    running: dict[int, tuple[Any, subprocess.Popen]] = {}
    stop: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stop.append(signum)
        for _, proc in running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while (todo and not stop) or running:
            while todo and not stop and len(running) < n:
                p = _next_ready(sweep_dir, points, todo, running, status)
                if p is None:  # the next points wait for running ones they start from
                    break
                run_dir = sweep_dir / p.dir
                with open(run_dir / LOG, "ab") as log:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "trainlab", "train", str(run_dir / JOB_CONFIG),
                         "run.resume=auto", "run.progress=false"],
                        stdout=log, stderr=subprocess.STDOUT, env=env,
                        start_new_session=True)  # a terminal's Ctrl-C reaches us, we forward
                running[p.index] = (p, proc)
                print(f"[{p.index + 1}/{len(points)}] {p.dir}: started ({n} at once, log "
                      f"{run_dir / LOG})", flush=True)
            for index, (p, proc) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[index]
                ok = code == 0 and _finished(sweep_dir / p.dir)
                status[index] = "done" if ok else "failed"
                tail = "done" if ok else (f"failed (exit {code}): "
                                          f"{_last_error(sweep_dir / p.dir / LOG)}")
                print(f"[{p.index + 1}/{len(points)}] {p.dir}: {tail}", flush=True)
            time.sleep(0.2)  # polling child exits; nothing waits on this timing
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stop:
        err = Interrupted(f"The sweep was stopped by {signal.Signals(stop[0]).name}; every "
                          f"running point saved its checkpoint. Run the same command again to "
                          f"continue.")
        err.signum, err.exit_code = stop[0], 128 + stop[0]
        raise err
    return [status[p.index] for p in points]

"""A training job as the command line and Slurm run it: the engine's `train` plus the pictures
drawn during training, and a requeue of the Slurm job when a time limit or preemption stopped it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from trainlab.config.schema import Config
from trainlab.dist.env import detect
from trainlab.engine.run import train
from trainlab.errors import Interrupted
from trainlab.launch.requeue import requeue_after_interrupt
from trainlab.report.mae import mae_visuals_hook
from trainlab.report.run_report import write_run_report

HOOKS = (mae_visuals_hook,)  # epoch hooks every job gets (each decides whether it applies)


def train_job(cfg: Config, recipe_name: str = "default") -> dict[str, Any]:
    """Train `cfg` (as one rank when launched by torchrun/srun); returns the summary. On
    SIGUSR1/SIGTERM inside a Slurm job the checkpoint is saved, then the job is requeued (rank
    0) and `Interrupted` is re-raised with the outcome in its message and exit code."""
    try:
        summary = train(cfg, recipe_name, HOOKS)
    except Interrupted as e:
        requeue_after_interrupt(e, detect().is_main, cfg.run.max_requeues)
        raise
    if cfg.run.report and detect().is_main:
        write_report(Path(summary["run_dir"]))
    return summary


def write_report(run_dir: Path) -> Path | None:
    """The run's report.html after training; a failure only warns (the run itself is done)."""
    try:
        out = write_run_report(run_dir)
    except Exception as e:  # noqa: BLE001 - drawing must never fail a finished run
        print(f"trainlab: warning: the report of {run_dir} could not be written "
              f"({type(e).__name__}: {e}); the run itself is complete. Retry with `trainlab "
              f"report {run_dir}`.", file=sys.stderr, flush=True)
        return None
    print(f"report: {out}", flush=True)
    return out

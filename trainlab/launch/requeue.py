"""Preemption and time limits inside a Slurm job: requeue the job after the checkpoint.

Slurm sends USR1 `--signal` seconds before the time limit (SIGTERM on preemption); the trainer
finishes its step, saves a mid-epoch checkpoint and raises `Interrupted`. Here rank 0 then
runs `scontrol requeue $SLURM_JOB_ID` (an array task keeps its index) so the same batch script
starts again and `run.resume=auto` continues from that checkpoint, at most `run.max_requeues`
times (Slurm counts them in SLURM_RESTART_COUNT).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from typing import TextIO

from trainlab.engine.trainer import Interrupted
from trainlab.launch import slurm

REQUEUE_SIGNALS = {int(getattr(signal, n)) for n in ("SIGUSR1", "SIGTERM") if hasattr(signal, n)}


def _append(err: Interrupted, text: str) -> None:
    err.args = (f"{err.args[0] if err.args else ''} {text}".strip(),)


def requeue_after_interrupt(err: Interrupted, is_main: bool, max_requeues: int,
                            environ: Mapping[str, str] | None = None,
                            log: TextIO | None = None) -> bool:
    """Requeue this Slurm job when `err` came from USR1/SIGTERM and requeues are left.

    Rewrites `err`'s message and exit code (0 once requeued, so srun does not kill the other
    ranks first). Returns True when the job was (or, on ranks > 0, is being) requeued.
    `scontrol requeue` makes Slurm kill this very process (the step is cancelled "DUE TO JOB
    REQUEUE"), so what the job log must say is written to `log` (stderr) and flushed BEFORE
    the requeue: anything printed after it may never be written.
    """
    env = os.environ if environ is None else environ
    job = env.get("SLURM_JOB_ID")
    if not job or err.signum not in REQUEUE_SIGNALS or max_requeues <= 0:
        return False
    restarts = int(env.get("SLURM_RESTART_COUNT", "0") or 0)
    if restarts >= max_requeues:
        _append(err, f"Slurm job {job} already restarted {restarts} times "
                     f"(run.max_requeues={max_requeues}), so it was not requeued again; "
                     f"resubmit its batch script (sbatch) to continue.")
        return False
    if not is_main:  # rank 0 requeues; exit cleanly so srun does not kill it first
        err.exit_code = 0
        return True
    out = sys.stderr if log is None else log
    print(f"trainlab: {err} Requeueing Slurm job {job} (restart {restarts + 1} of at most "
          f"{max_requeues}); it resumes from this checkpoint when it starts again.", file=out,
          flush=True)
    try:
        slurm.requeue(job)
    except slurm.SlurmError as e:  # e.g. cancelled by the user: the job is already ending
        _append(err, f"Requeueing Slurm job {job} failed ({e}); the job ends here.")
        return False
    # Only reached when Slurm has not killed this process yet; the details are logged above.
    err.args = (f"Requeued Slurm job {job}.",)
    err.exit_code = 0
    return True

"""`trainlab submit`: one run as one Slurm batch job.

The run folder gets `job.yaml` (the resolved config the job trains from), `job.sbatch` (the
rendered script, editable) and `job.json` (job ids, one per submission; or, when sbatch
refused the job, its error as `submit_error`, so `trainlab status` shows "submit-failed"
rather than a run). stdout/stderr of the job land in the run folder as
`slurm-<jobid>.out/.err`, appended across requeues.
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from trainlab.config.load import build_config, dump_yaml
from trainlab.config.schema import Config
from trainlab.engine.checks import check_config
from trainlab.engine.run import resolve_run_dir
from trainlab.files import atomic_write_json, atomic_write_text, recipe_name
from trainlab.launch import slurm
from trainlab.launch.script import SlurmOptions, render_script, single_run_lines

JOB_CONFIG = "job.yaml"
JOB_SCRIPT = "job.sbatch"
JOB_RECORD = "job.json"


def job_config(cfg: Config, run_dir: Path) -> Config:
    """`cfg` validated, with run.dir pinned to the absolute `run_dir` (the job resumes by
    run.resume=auto on its command line; no progress bar in a batch log)."""
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dir=str(run_dir),
                                                           resume=None, progress=False))
    check_config(cfg)
    return cfg


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def record_submission(path: Path, job_id: str, script: Path, extra: dict[str, Any]) -> None:
    """Append a submission to `path` (job.json or sweep.json's 'jobs'), atomically; a
    successful submission clears an earlier `submit_error`."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.pop("submit_error", None)
    data.setdefault("jobs", []).append({"job_id": job_id, "script": str(script),
                                        "submitted": _now(), **extra})
    atomic_write_json(path, data)


def record_failure(path: Path, error: str, extra: dict[str, Any]) -> None:
    """Record in `path` (job.json or sweep.json) that sbatch refused a submission, atomically:
    status then says "submit-failed" with sbatch's reason instead of showing a run."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault("jobs", [])
    data["submit_error"] = {"error": error, "time": _now(), **extra}
    atomic_write_json(path, data)


def submit_run(recipe: str | None, overrides: list[str], opts: SlurmOptions,
               dry_run: bool = False) -> dict[str, Any]:
    """Render (and unless `dry_run`, save and sbatch) the batch script of one run.

    Returns {'run_dir', 'script' (text), 'script_path', 'job_id' (None on a dry run)}.
    """
    name = recipe_name(recipe)
    cfg = build_config(recipe, overrides)  # raises on bad keys before anything else
    run_dir = resolve_run_dir(dataclasses.replace(
        cfg, run=dataclasses.replace(cfg.run, resume=None)), name).absolute()
    cfg = job_config(cfg, run_dir)
    script = render_script(opts, name=f"trainlab-{name}", log=str(run_dir / "slurm-%j"),
                           select_run=single_run_lines(run_dir), run_config=JOB_CONFIG,
                           what=f"trainlab run {run_dir} (recipe {recipe or 'defaults'})")
    script_path = run_dir / JOB_SCRIPT
    out: dict[str, Any] = {"run_dir": run_dir, "script": script, "script_path": script_path,
                           "job_id": None}
    if dry_run:
        return out
    slurm.require("sbatch", "submitting the job")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / JOB_CONFIG, dump_yaml(cfg))
    atomic_write_text(script_path, script)
    os.chmod(script_path, 0o755)
    try:
        out["job_id"] = slurm.sbatch(str(script_path), script_path=str(script_path))
    except slurm.SlurmError as e:
        record_failure(run_dir / JOB_RECORD, str(e), {"script": str(script_path)})
        raise
    record_submission(run_dir / JOB_RECORD, out["job_id"], script_path,
                      {"recipe": str(Path(recipe).absolute()) if recipe else None,
                       "overrides": list(overrides)})
    return out

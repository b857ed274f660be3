"""Slurm batch scripts: resources from the command line over the user's cluster defaults.

`SlurmOptions` holds what `trainlab submit`/`sweep` accept; `load_user_defaults` reads
`~/.config/trainlab/slurm.yaml` (or $TRAINLAB_SLURM_CONFIG); `render_script` writes a plain,
editable bash script: one srun task per GPU (one per node on CPUs), the USR1 time-limit signal
forwarded to the training processes (which checkpoint, requeue the job and exit), append-mode
logs inside the run or sweep folder.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from trainlab.errors import ConfigError


@dataclass
class SlurmOptions:
    """sbatch resources and script extras. None = not requested (the cluster's default)."""

    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0  # 0 -> a CPU job with one task per node
    cpus_per_task: int | None = None
    mem: str | None = None  # e.g. 32G (per node)
    time: str | None = None  # e.g. 4:00:00, 1-00:00:00, 90 (minutes)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    job_name: str | None = None
    signal_grace_s: int = 120  # USR1 this many seconds before the time limit
    sbatch: list[str] = field(default_factory=list)  # extra #SBATCH lines, e.g. --exclusive
    setup: list[str] = field(default_factory=list)  # shell lines before training
    python: str | None = None  # interpreter on the compute nodes; None -> this one


FIELDS = {f.name: f for f in dataclasses.fields(SlurmOptions)}


def user_defaults_path() -> Path:
    """$TRAINLAB_SLURM_CONFIG, else $XDG_CONFIG_HOME/trainlab/slurm.yaml (~/.config/...)."""
    if os.environ.get("TRAINLAB_SLURM_CONFIG"):
        return Path(os.environ["TRAINLAB_SLURM_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "trainlab" / "slurm.yaml"


# integer options: (smallest, largest) value; the flag names them in messages
INT_RANGES = {"nodes": (1, None), "gpus_per_node": (0, None), "cpus_per_task": (1, None),
              "signal_grace_s": (1, 65535)}  # Slurm's --signal takes 0..65535 s
FLAGS = {"signal_grace_s": "--signal-grace"}


def flag(name: str) -> str:
    """The command-line flag of option `name`: 'cpus_per_task' -> '--cpus-per-task'."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def _typed(name: str, node: yaml.Node, value: Any, source: str) -> Any:
    """The value of key `name` from the defaults file: `node` is its YAML node, `value` what
    YAML made of it. Text options keep the text as written: YAML 1.1 reads `time: 1:00:00` as
    the number 3600 (minutes, for Slurm) and `partition: 010` as 8."""
    tp = str(FIELDS[name].type)
    if value is None:
        return None
    if "list" in tp:
        nodes = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not all(isinstance(n, yaml.ScalarNode) for n in nodes):
            raise ConfigError(f"In {source}, '{name}' must be a line or a list of lines, got "
                              f"{value!r}.")
        return [str(n.value) for n in nodes]
    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(f"In {source}, '{name}' must be a single value, got {value!r}.")
    if "int" in tp and "str" not in tp:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"In {source}, '{name}' must be an integer, got {value!r}.")
        return value
    return str(node.value)


def load_user_defaults(path: Path | None = None) -> dict[str, Any]:
    """Cluster defaults from the user's slurm.yaml ({} when the file does not exist); a key
    set to null counts as not set."""
    path = path or user_defaults_path()
    if not path.is_file():
        return {}
    try:
        text = path.read_text()
        data = yaml.safe_load(text) or {}
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"Slurm defaults file {path} is not valid YAML: "
                          f"{' '.join(str(e).split())}") from None
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"Slurm defaults file {path} must map keys to values, e.g. "
                          f"'partition: gpu'.")
    out: dict[str, Any] = {}
    for key_node, node in root.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            raise ConfigError(
                f"Unknown key '{key}' in the Slurm defaults file {path}. Valid keys: "
                f"{', '.join(FIELDS)}.")
        value = _typed(name, node, data.get(key), f"the Slurm defaults file {path}")
        if value is not None:
            out[name] = value
    return out


def resolve_options(cli: dict[str, Any], defaults_path: Path | None = None) -> SlurmOptions:
    """Options from the command line (None = not given) over the user defaults file.
    List options (sbatch, setup) add up: the file's lines first, then the command line's."""
    path = defaults_path or user_defaults_path()
    merged: dict[str, Any] = dict(load_user_defaults(path))
    source = {k: f"the Slurm defaults file {path}" for k in merged}
    for k, v in cli.items():
        if k not in FIELDS or v is None:
            continue
        if isinstance(v, list):
            merged[k] = [*merged.get(k, []), *v]
        else:
            merged[k], source[k] = v, "the command line"
    for name, (low, high) in INT_RANGES.items():
        v = merged.get(name)
        if v is not None and (v < low or (high is not None and v > high)):
            limit = f"from {low} to {high}" if high is not None else f">= {low}"
            where = "" if source[name] == "the command line" else f" ('{name}' in {source[name]})"
            raise ConfigError(f"{flag(name)}{where} must be {limit} (got {v}).")
    return SlurmOptions(**merged)


def _directives(opts: SlurmOptions, name: str, log: str, array: str | None) -> list[str]:
    tasks = max(1, opts.gpus_per_node)
    lines = [f"--job-name={opts.job_name or name}", f"--chdir={os.getcwd()}",
             f"--output={log}.out", f"--error={log}.err", "--open-mode=append", "--requeue",
             f"--signal=B:USR1@{opts.signal_grace_s}", f"--nodes={opts.nodes}",
             f"--ntasks-per-node={tasks}"]
    if opts.gpus_per_node:
        lines.append(f"--gpus-per-node={opts.gpus_per_node}")
    for key in ("cpus_per_task", "mem", "time", "partition", "account", "qos", "constraint"):
        value = getattr(opts, key)
        if value not in (None, ""):
            lines.append(f"--{key.replace('_', '-')}={value}")
    if array:
        lines.append(f"--array={array}")
    directives = [f"#SBATCH {line}" for line in lines]
    for extra in opts.sbatch:
        extra = extra.strip()
        directives.append(extra if extra.startswith("#SBATCH") else f"#SBATCH {extra}")
    return directives


def render_script(opts: SlurmOptions, *, name: str, log: str, select_run: list[str],
                  run_config: str, what: str, array: str | None = None) -> str:
    """The batch script text.

    `log`: path prefix of the .out/.err files (may use %j, %A, %a). `select_run`: shell lines
    that set RUN_DIR (one run: a fixed path; a sweep: picked by SLURM_ARRAY_TASK_ID).
    `run_config`: the config file inside $RUN_DIR that the job trains from.
    """
    python = opts.python or sys.executable
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    lines = ["#!/bin/bash", f"# {what}", f"# Rendered by `trainlab` on {stamp}; edit freely "
             f"and resubmit with `sbatch <this file>`.",
             *_directives(opts, name, log, array), ""]
    if opts.setup:
        lines += ["# cluster setup", *opts.setup, ""]
    lines += [
        *select_run,
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-${OMP_NUM_THREADS:-1}}"',
        'echo "trainlab: job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) on '
        '$(hostname) at $(date -Is): ${RUN_DIR}"',
        "",
        "# One task per GPU (one per node on CPUs); trainlab reads SLURM_PROCID/SLURM_LOCALID,",
        "# SLURM_STEP_NUM_TASKS and the node list to set up the process group. run.resume=auto",
        "# continues from the run's last checkpoint after a requeue.",
        f"srun --kill-on-bad-exit=1 {shlex.quote(python)} -m trainlab train "
        f'"${{RUN_DIR}}/{run_config}" run.resume=auto &',
        "pid=$!",
        "# Time limit / preemption: Slurm sends USR1 to this shell (--signal=B:USR1@...);",
        "# pass it on. trainlab finishes the step, saves a checkpoint, requeues the job, exits.",
        "trap 'echo \"trainlab: USR1 at $(date -Is), checkpointing\"; kill -USR1 $pid' USR1",
        "trap 'kill -TERM $pid' TERM",
        'while :; do wait "$pid"; rc=$?; '
        'if [ $rc -le 128 ] || ! kill -0 "$pid" 2>/dev/null; then break; fi; done',
        "# A rank or node that died takes the step down (--kill-on-bad-exit): srun's lines",
        "# above name the task (= rank) and node that failed first.",
        'if [ $rc -ne 0 ]; then echo "trainlab: error: the training step ended with exit code '
        '$rc on ${SLURM_JOB_NUM_NODES:-1} node(s) ${SLURM_JOB_NODELIST:-}; the srun lines above '
        'name the task (= rank) and node that failed first. The last checkpoint in '
        '${RUN_DIR}/checkpoints is intact. After a node failure Slurm requeues this job by '
        'itself (--requeue) and it continues from there (run.resume=auto); otherwise resubmit '
        'this script (sbatch) or the same trainlab submit command." >&2; fi',
        "exit $rc",
        "",
    ]
    return "\n".join(lines)


def single_run_lines(run_dir: Path) -> list[str]:
    """RUN_DIR for a one-run job."""
    return [f"RUN_DIR={shlex.quote(str(run_dir))}"]


def array_run_lines(point_dirs: list[Path]) -> list[str]:
    """RUN_DIR picked from the sweep's points by array index (+ TRAINLAB_ARRAY_OFFSET, set
    when a sweep larger than the cluster's MaxArraySize was split into several arrays)."""
    items = "\n".join(f"  {shlex.quote(str(p))}" for p in point_dirs)
    return [f"POINTS=(\n{items}\n)",
            'INDEX=$(( SLURM_ARRAY_TASK_ID + ${TRAINLAB_ARRAY_OFFSET:-0} ))',
            'RUN_DIR="${POINTS[$INDEX]}"']

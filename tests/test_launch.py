"""Slurm launch pieces that need no cluster: sweep expansion, array splitting, batch-script
rendering (dry runs), user defaults, the requeue decision, status from run files."""

from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from trainlab.engine.trainer import Interrupted
from trainlab.errors import ConfigError
from trainlab.launch import sweep as sw
from trainlab.launch.requeue import requeue_after_interrupt
from trainlab.launch.script import resolve_options


def test_grid_product_seeds_and_dirs():
    spec = sw.parse_spec(["optim.lr=1e-3,3e-3", "model.widths=[8,16],[16,32]"], [], 0, 2)
    points = sw.expand(spec, base_seed=5)
    assert len(points) == 2 * 2 * 2
    assert points[0] == {"optim.lr": 1e-3, "model.widths": [8, 16], "run.seed": 5}
    assert points[-1] == {"optim.lr": 3e-3, "model.widths": [16, 32], "run.seed": 6}
    assert sw.point_dir(3, {"optim.lr": 0.001, "model.widths": [8, 16]}) == \
        "003_optim.lr=0.001_model.widths=8-16"


def test_split_values_keeps_lists():
    assert sw._split_values("[1,2],[3], 4") == ["[1,2]", "[3]", "4"]


def test_random_ranges_are_within_bounds_and_reproducible():
    spec = sw.parse_spec([], ["optim.lr=1e-5:1e-2:log", "train.batch_size=16:64:int"], 50, 1)
    a, b = sw.expand(spec, 0), sw.expand(spec, 0)
    assert a == b and len(a) == 50
    lrs = [p["optim.lr"] for p in a]
    assert all(1e-5 <= x <= 1e-2 for x in lrs)
    # log-uniform: about as many samples per decade
    decades = [sum(10 ** -(k + 1) <= x < 10 ** -k for x in lrs) for k in (2, 3, 4)]
    assert min(decades) >= 8, decades
    assert all(isinstance(p["train.batch_size"], int) and 16 <= p["train.batch_size"] <= 64
               for p in a)


@pytest.mark.parametrize("grid, ranges, n, msg", [
    (["optim.lrr=1e-3,1e-2"], [], 0, "optim.lr"),  # suggests the closest key
    (["lr=1e-3"], [], 0, "not a config key"),
    ([], ["optim.lr=1e-2:1e-5:log"], 5, "low < high"),
    ([], ["optim.lr=1e-5:1e-2"], 0, "--random"),
    ([], [], 3, "--range"),
    ([], [], 0, "Nothing to sweep"),
])
def test_bad_sweep_specs(grid, ranges, n, msg):
    with pytest.raises(ConfigError, match=msg):
        sw.parse_spec(grid, ranges, n, 1)


def test_chunks_respect_max_array_size():
    assert sw.chunks(3, 1001) == [(0, 2)]
    assert sw.chunks(2500, 1001) == [(0, 1000), (1001, 2001), (2002, 2499)]
    assert sum(b - a + 1 for a, b in sw.chunks(2500, 1001)) == 2500
    assert sw.array_spec(3, 2) == "0-2%2"


def test_bad_point_value_is_reported_before_submitting(tmp_path):
    r = run_cli("sweep", "--grid", "train.batch_size=32,-1", f"--dir={tmp_path / 's'}",
                "--local")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "point 1" in r.stderr and "train.batch_size" in r.stderr
    assert not (tmp_path / "s").exists()


def test_grid_key_not_in_config_cli(tmp_path):
    r = run_cli("sweep", "--grid", "optim.learning_rate=1e-3,1e-2", "--local",
                f"--dir={tmp_path / 's'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "optim.learning_rate" in r.stderr and "not a config key" in r.stderr


def test_dry_run_script_has_every_resource_and_setup(tmp_path):
    defaults = tmp_path / "slurm.yaml"
    defaults.write_text("account: proj42\nsetup:\n  - module load cuda/12\n"
                        "signal_grace_s: 300\n")
    r = run_cli("submit", "recipes/digits_cnn.yaml", "optim.lr=3e-3",
                f"run.dir={tmp_path / 'run'}", "--partition=gpu", "--nodes=2",
                "--gpus-per-node=4", "--cpus-per-task=8", "--mem=64G", "--time=1-02:00:00",
                "--qos=high", "--constraint=a100", "--sbatch=--exclusive",
                "--setup=source ~/venv/bin/activate", "--dry-run",
                env={"TRAINLAB_SLURM_CONFIG": str(defaults)})
    assert r.returncode == 0, r.stderr
    s = r.stdout
    for line in ("--partition=gpu", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4",
                 "--cpus-per-task=8", "--mem=64G", "--time=1-02:00:00", "--account=proj42",
                 "--qos=high", "--constraint=a100", "--exclusive", "--requeue",
                 "--open-mode=append", "--signal=B:USR1@300",
                 f"--output={tmp_path / 'run'}/slurm-%j.out"):
        assert f"#SBATCH {line}\n" in s, line
    assert s.index("module load cuda/12") < s.index("source ~/venv/bin/activate") < \
        s.index("srun ")
    assert "-m trainlab train \"${RUN_DIR}/job.yaml\" run.resume=auto" in s
    assert sys.executable in s
    assert not (tmp_path / "run").exists(), "a dry run writes nothing"


def test_sweep_dry_run_is_one_array(tmp_path):
    r = run_cli("sweep", "--grid", "optim.lr=1e-3,3e-3,1e-2", "--max-parallel=2",
                f"--dir={tmp_path / 's'}", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --array=0-2%2\n" in r.stdout
    assert r.stdout.count("/000_optim.lr=0.001") == 1 and "POINTS=(" in r.stdout
    assert not (tmp_path / "s").exists()


def test_user_defaults_unknown_key(tmp_path):
    bad = tmp_path / "slurm.yaml"
    bad.write_text("partiton: gpu\n")
    with pytest.raises(ConfigError, match="partiton"):
        resolve_options({}, bad)
    opts = resolve_options({"setup": ["b"], "partition": "x"}, _write(tmp_path, "setup: [a]\n"
                                                                     "partition: gpu\n"))
    assert opts.setup == ["a", "b"] and opts.partition == "x"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "ok.yaml"
    p.write_text(text)
    return p


def _interrupted(signum: int) -> Interrupted:
    e = Interrupted("Received a signal: saved a checkpoint.")
    e.signum, e.exit_code = signum, 128 + signum
    return e


def test_requeue_only_in_slurm_and_within_max():
    e = _interrupted(signal.SIGUSR1)
    assert requeue_after_interrupt(e, True, 3, environ={}) is False  # not in Slurm
    assert e.exit_code == 128 + signal.SIGUSR1
    e = _interrupted(signal.SIGINT)  # Ctrl-C in an interactive job: no requeue
    assert requeue_after_interrupt(e, True, 3, {"SLURM_JOB_ID": "7"}) is False
    e = _interrupted(signal.SIGUSR1)
    env = {"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "3"}
    assert requeue_after_interrupt(e, True, 3, env) is False
    assert "already restarted 3 times" in str(e) and "run.max_requeues=3" in str(e)
    e = _interrupted(signal.SIGTERM)  # rank 1 leaves the requeue to rank 0, exits cleanly
    assert requeue_after_interrupt(e, False, 3, {"SLURM_JOB_ID": "7"}) is True
    assert e.exit_code == 0


def test_status_of_local_run_from_files(tmp_path):
    run = tmp_path / "runs" / "r1"
    r = run_cli("train", f"run.dir={run}", "train.epochs=1", "run.progress=false",
                "run.tensorboard=false")
    assert r.returncode == 0, r.stderr
    (run / "job.json").write_text(json.dumps({"jobs": []}))
    s = run_cli("status", str(tmp_path), cwd=tmp_path, env={"PATH": str(Path(sys.executable)
                                                                           .parent)})
    assert s.returncode == 0, s.stderr
    line = next(x for x in s.stdout.splitlines() if x.startswith("runs/r1"))
    assert "COMPLETED" in line and "1/1" in line
    assert not math.isnan(float(line.split()[5]))


def test_local_sweep_runs_points_then_compares_and_continues(tmp_path):
    sweep = tmp_path / "s"
    args = ["sweep", "model.name=mlp", "train.epochs=1", "run.tensorboard=false", "--grid",
            "optim.lr=1e-3,1e-2", f"--dir={sweep}", "--local"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert manifest["local"] and manifest["varied"] == ["optim.lr"]
    for p in manifest["points"]:
        assert (sweep / p["dir"] / "summary.json").is_file()
    assert (sweep / "compare.csv").is_file() and "best val acc" in r.stdout
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already finished, skipped") == 2


def test_sweep_into_a_dir_with_a_damaged_manifest_is_refused_clearly(tmp_path):
    (tmp_path / "sweep.json").write_text("{not json")
    r = run_cli("sweep", "--grid", "optim.lr=1e-3,1e-2", f"--dir={tmp_path}", "--local")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "sweep.json is not valid JSON" in r.stderr

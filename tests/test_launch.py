"""Slurm launch pieces that need no cluster: sweep expansion, array splitting, batch-script
rendering (dry runs), user defaults, the requeue decision, status from run files, and what a
refused submission (a fake failing `sbatch` on PATH) leaves behind."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from trainlab import cli
from trainlab.engine.trainer import Interrupted
from trainlab.errors import ConfigError
from trainlab.launch import chain, slurm
from trainlab.launch import sweep as sw
from trainlab.launch.compare import compare_sweep
from trainlab.launch.requeue import requeue_after_interrupt
from trainlab.launch.runstate import Submission, classify, sweep_submissions
from trainlab.launch.script import resolve_options
from trainlab.launch.status import status_rows


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
    assert chain.parts([[]] * 3, 1001) == [(0, 2, [])]
    assert chain.parts([[]] * 2500, 1001) == [(0, 1000, []), (1001, 2001, []), (2002, 2499, [])]
    assert sum(b - a + 1 for a, b, _ in chain.parts([[]] * 2500, 1001)) == 2500
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


def test_user_defaults_keep_text_as_written_and_null_is_unset(tmp_path):
    """YAML 1.1 reads 1:00:00 as 3600 (which Slurm takes as minutes) and 010 as 8: text
    options keep what the file says; a key set to null falls back to the default."""
    opts = resolve_options({}, _write(tmp_path, "time: 1:00:00\npartition: 010\nnodes: null\n"
                                                "signal_grace_s: ~\nsbatch: --exclusive\n"))
    assert (opts.time, opts.partition, opts.nodes, opts.signal_grace_s) == ("1:00:00", "010", 1,
                                                                            120)
    assert opts.sbatch == ["--exclusive"]
    with pytest.raises(ConfigError, match="'setup' must be a line or a list of lines"):
        resolve_options({}, _write(tmp_path, "setup: [a, {b: c}]\n"))
    with pytest.raises(ConfigError, match=r"--signal-grace \('signal_grace_s' in the Slurm"):
        resolve_options({}, _write(tmp_path, "signal_grace_s: 70000\n"))
    assert resolve_options({"signal_grace_s": 30}, _write(tmp_path, "signal_grace_s: 0\n")) \
        .signal_grace_s == 30  # the command line wins before the range is checked


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


def test_requeue_is_logged_and_flushed_before_scontrol_kills_the_job(monkeypatch):
    """`scontrol requeue` kills the job's processes, so the log line must be out before it."""
    log = io.StringIO()
    seen: list[str] = []
    monkeypatch.setattr(slurm, "requeue", lambda job: seen.append(log.getvalue()))
    e = _interrupted(signal.SIGUSR1)
    env = {"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "1"}
    assert requeue_after_interrupt(e, True, 3, env, log=log) is True
    assert len(seen) == 1 and "saved a checkpoint" in seen[0] and \
        "Requeueing Slurm job 7 (restart 2 of at most 3)" in seen[0], seen
    assert e.exit_code == 0

    def refuse(job: str) -> None:
        raise slurm.SlurmError("scontrol said: Job has already finished")

    monkeypatch.setattr(slurm, "requeue", refuse)
    e = _interrupted(signal.SIGTERM)
    assert requeue_after_interrupt(e, True, 3, {"SLURM_JOB_ID": "8"}, log=io.StringIO()) is False
    assert "Requeueing Slurm job 8 failed" in str(e) and "already finished" in str(e)
    assert e.exit_code == 128 + signal.SIGTERM


def test_status_of_local_run_from_files(tmp_path):
    run = tmp_path / "runs" / "r1"
    r = run_cli("train", f"run.dir={run}", "train.epochs=1", "run.progress=false",
                "run.tensorboard=false")
    assert r.returncode == 0, r.stderr
    (run / "job.json").write_text(json.dumps({"jobs": []}))
    s = run_cli("status", str(tmp_path), cwd=tmp_path, env={"PATH": str(Path(sys.executable)
                                                                           .parent)})
    assert s.returncode == 0, s.stderr
    line = next(x for x in s.stdout.splitlines() if x.startswith("runs/r1")).split()
    # job, state, slurm, requeues, nodes, epoch (no Slurm job: no requeues, no nodes)
    assert line[1:7] == ["-", "done", "-", "-", "-", "1/1"], line
    assert not math.isnan(float(line[8]))


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


def _failing_sbatch(tmp_path: Path) -> dict[str, str]:
    """An env whose PATH has only python and an `sbatch` that refuses like Slurm does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid "
                    "partition name specified' >&2\nexit 1\n")
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}",
            "SLURM_CONF": "/nonexistent"}


def test_refused_submissions_show_as_submit_failed_not_running(tmp_path, capsys, monkeypatch):
    env = _failing_sbatch(tmp_path)
    sweep = tmp_path / "s"
    args = ("sweep", "model.name=mlp", "--grid", "optim.lr=1e-3,1e-2", f"--dir={sweep}",
            "--partition=nosuch")
    r = run_cli(*args, cwd=tmp_path, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "Invalid partition name" in r.stderr and "run the same command again" in r.stderr
    man = json.loads((sweep / "sweep.json").read_text())
    assert man["jobs"] == [] and "Invalid partition" in man["submit_error"]["error"]
    assert (man["submit_error"]["first"], man["submit_error"]["last"]) == (0, 1)
    run = tmp_path / "r"
    r = run_cli("submit", "model.name=mlp", f"run.dir={run}", "--partition=nosuch",
                cwd=tmp_path, env=env)
    assert r.returncode == 2 and "Nothing was submitted" in r.stderr, r.stderr
    assert "Invalid partition" in json.loads((run / "job.json").read_text())["submit_error"][
        "error"]
    s = run_cli("status", str(tmp_path), cwd=tmp_path, env=env)
    assert s.returncode == 0, s.stderr
    rows = [line.split() for line in s.stdout.splitlines()[1:-1]]
    assert [row[:4] for row in rows] == [
        ["r", "-", "submit-failed", "-"],
        [f"s/{man['points'][0]['dir']}", "-", "submit-failed", "-"],
        [f"s/{man['points'][1]['dir']}", "-", "submit-failed", "-"]], s.stdout
    assert s.stdout.splitlines()[-1] == "3 submit-failed"
    assert "running" not in s.stdout
    monkeypatch.setenv("PATH", env["PATH"])  # compare in-process: no Slurm commands either
    assert cli.main(["compare", str(sweep)]) == 0
    monkeypatch.undo()
    out = capsys.readouterr().out
    assert "2 points, 2 submit-failed" in out and "running" not in out
    assert "Invalid partition name" in out
    # the same command may submit the sweep again (nothing of it was submitted)
    again = run_cli(*args, cwd=tmp_path, env=env)
    assert "already holds a sweep" not in again.stderr and "Invalid partition" in again.stderr


def test_a_sweep_never_submitted_is_not_shown_running(tmp_path):
    spec = sw.parse_spec(["optim.lr=1e-3,1e-2"], [], 0, 1)
    points, configs = sw.plan(None, ["model.name=mlp"], spec, tmp_path)
    sw.write_sweep(tmp_path, None, ["model.name=mlp"], spec, points, configs, local=False)
    assert [r["status"] for r in compare_sweep(tmp_path)] == ["not-submitted"] * 2
    assert [r["state"] for r in status_rows(tmp_path)] == ["not-submitted"] * 2
    run = tmp_path / "run"  # `trainlab submit` wrote its script, but sbatch never answered
    run.mkdir()
    (run / "job.sbatch").write_text("#!/bin/bash\n")
    assert [(r["run"], r["state"]) for r in status_rows(run)] == [("run", "not-submitted")]


@pytest.mark.parametrize("files, sub, st, problem, want", [
    ((), Submission("slurm", "5"), slurm.JobState("5", "PENDING", "Priority"), "", "pending"),
    ((), Submission("slurm", "5"), slurm.JobState("5", "REQUEUED"), "", "pending"),
    ((), Submission("slurm", "5"), slurm.JobState("5", "RUNNING"), "", "running"),
    (("summary.json",), Submission("slurm", "5"), slurm.JobState("5", "COMPLETED"), "", "done"),
    ((), Submission("slurm", "5"), slurm.JobState("5", "COMPLETED"), "", "failed"),
    ((), Submission("slurm", "5"), slurm.JobState("5", "FAILED", exit_code=1), "", "failed"),
    (("checkpoints/last.pt",), Submission("slurm", "5"),
     slurm.JobState("5", "FAILED", exit_code=128 + signal.SIGUSR1), "", "interrupted"),
    ((), Submission("slurm", "5"), slurm.JobState("5", "CANCELLED"), "", "interrupted"),
    ((), Submission("slurm", "5"), slurm.JobState("5", "TIMEOUT"), "", "interrupted"),
    (("checkpoints/last.pt",), Submission("slurm", "5"), None, "", "interrupted"),
    (("metrics.jsonl",), Submission("slurm", "5"), None, "", "failed"),
    ((), Submission("slurm", "5"), None, "squeue failed: Unable to contact", "unknown"),
    (("summary.json",), Submission("slurm", "5"), None, "squeue failed", "done"),
    ((), Submission("failed", error="Invalid account"), None, "", "submit-failed"),
    ((), Submission("none"), None, "", "not-submitted"),
    (("metrics.jsonl",), Submission("local"), None, "", "unfinished"),
    ((), Submission("local"), None, "", "not-started"),
])
def test_run_state_from_submission_slurm_and_files(tmp_path, files, sub, st, problem, want):
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("{}")
    state, reason = classify(tmp_path, sub, st, problem)
    assert state == want, (state, reason)
    if want == "submit-failed":
        assert "Invalid account" in reason
    if want == "unknown":
        assert problem in reason


def test_status_of_odd_run_folders(tmp_path):
    """job.yaml alone: a submission that never completed; an unreadable job.json: unknown,
    naming it; a folder scan shows a damaged sweep as one row and goes on."""
    run = tmp_path / "only-job"
    run.mkdir()
    (run / "job.yaml").write_text("train: {epochs: 1}\n")
    assert [(r["run"], r["state"]) for r in status_rows(run)] == [("only-job", "not-submitted")]
    (run / "job.json").write_text('{"jobs": [{"job_id"')  # cut short
    (row,) = status_rows(run)
    assert row["state"] == "unknown" and "job.json is unreadable" in row["reason"]
    (run / "job.json").write_text(json.dumps({"jobs": [{"job_id": None}]}))
    assert "does not hold a list of jobs" in status_rows(run)[0]["reason"]
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps({"format": "trainlab-sweep/1",
                                                  "points": [{"dir": "p0"}]}))
    rows = {r["run"]: r for r in status_rows(tmp_path)}
    assert rows["sweep"]["state"] == "unknown" and "sweep.json is damaged" in \
        rows["sweep"]["reason"]
    assert rows["only-job"]["state"] == "unknown"


def test_resubmitted_points_map_to_their_new_array_tasks():
    man = {"points": [{"index": i, "dir": f"p{i}"} for i in range(4)],
           "jobs": [{"job_id": "7", "first": 0, "last": 3},
                    {"job_id": "9", "points": [1, 3]}]}
    assert [s.job for s in sweep_submissions(man)] == ["7_0", "9_0", "7_2", "9_1"]


@pytest.mark.parametrize("extra", [["--grid", "optim.lr=1e-3,1e-2"], ["optim.lr=0.1"],
                                   ["--local"], ["--parallel", "2"], ["--random", "3"]])
def test_resubmit_refuses_a_new_sweep_spec_with_it(tmp_path, capsys, extra):
    assert cli.main(["sweep", "--resubmit", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert "--resubmit DIR takes the points from DIR/sweep.json" in err and "Traceback" not in err
    assert cli.main(["sweep", "--resubmit", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err

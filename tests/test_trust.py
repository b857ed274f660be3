"""Nothing is lost and runs never mix: run.dir with an earlier run, resume rules, checkpoint
contents, where results go (run.dir checked first, umask), options in any order."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from conftest import quick

from trainlab.cli import main
from trainlab.engine import run as run_mod

TINY = ["model.name=mlp", "model.hidden=[16]", "train.epochs=1"]


def run_main(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def train_ok(capsys, tmp_path, *extra):
    code, out, err = run_main(capsys, "train", *quick(tmp_path, *TINY, *extra))
    assert code == 0, err
    return out


def assert_refused(code, err, *names):
    assert code == 2, err
    assert err.startswith("trainlab: error: ") and "Traceback" not in err
    for n in names:
        assert n in err, (n, err)


@pytest.fixture
def no_data(monkeypatch):
    """Fail the test if any data set is read."""
    def boom(*a, **k):
        raise AssertionError("data was read")
    monkeypatch.setattr("trainlab.data.pipeline.load_data", boom)


# ---------------------------------------------------------------------------- lost work
def test_rerun_into_a_run_dir_is_refused_and_changes_nothing(capsys, tmp_path, monkeypatch):
    train_ok(capsys, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    monkeypatch.setattr("trainlab.data.pipeline.load_data",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("data read")))
    code, out, err = run_main(capsys, "train", *quick(tmp_path, *TINY))
    assert_refused(code, err, f"run.dir={tmp_path}", "run.resume=auto", "run.overwrite=true")
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_overwrite_starts_over_and_auto_continues(capsys, tmp_path):
    train_ok(capsys, tmp_path, "train.epochs=2")
    (tmp_path / "tb").mkdir(exist_ok=True)
    (tmp_path / "tb" / "events.old").write_text("old run")
    train_ok(capsys, tmp_path, "run.overwrite=true")
    assert not (tmp_path / "tb" / "events.old").exists()  # no mixed TensorBoard events
    ck = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ck["state"]["epoch"] == 1  # a fresh one-epoch run, not the old two
    out = train_ok(capsys, tmp_path, "train.epochs=2", "run.resume=auto")  # extend the run
    assert "resumed from" in out
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["state"][
        "epoch"] == 2


def test_auto_takes_over_a_folder_without_checkpoint(capsys, tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    train_ok(capsys, tmp_path, "run.resume=auto")
    assert (tmp_path / "summary.json").is_file()


# ---------------------------------------------------------------------------- resume rules
@pytest.mark.parametrize("change,key", [
    ("optim.name=sgd", "optim.name"),
    ("model.hidden=[32]", "model.hidden"),
    ("data.val_fraction=0.2", "data.val_fraction"),
    ("train.label_smoothing=0.1", "train.label_smoothing"),
    ("train.batch_size=32", "train.batch_size"),
    ("data.flip=true", "data.flip"),
])
def test_resume_with_other_settings_is_refused(capsys, tmp_path, change, key, no_data):
    src = tmp_path / "a"
    ck = {"format": "trainlab/1", "model": {}, "optimizer": {}, "state": {}, "rng": [],
          "config": _saved_config(), "data": {}}
    (src / "checkpoints").mkdir(parents=True)
    torch.save(ck, src / "checkpoints" / "last.pt")
    code, out, err = run_main(capsys, "train", *quick(tmp_path / "b", *TINY, change,
                                                      f"run.resume={src}"))
    assert_refused(code, err, "Cannot resume", key, "saved")
    assert not (tmp_path / "b").exists()


def _saved_config(*over: str) -> dict:
    from trainlab.config.load import build_config, to_dict

    return to_dict(build_config(None, [*TINY, *over]))


def test_resume_that_turns_test_time_augmentation_off_is_refused(capsys, tmp_path, no_data):
    """best.pt compares validation accuracies: all of one run's must be measured one way."""
    src = tmp_path / "a"
    ck = {"format": "trainlab/1", "model": {}, "optimizer": {}, "state": {}, "rng": [],
          "config": _saved_config("data.flip=true", "train.tta=flip"), "data": {}}
    (src / "checkpoints").mkdir(parents=True)
    torch.save(ck, src / "checkpoints" / "last.pt")
    code, out, err = run_main(capsys, "train", *quick(tmp_path / "b", *TINY, "data.flip=true",
                                                      f"run.resume={src}"))
    assert_refused(code, err, "Cannot resume", "train.tta: saved 'flip', now 'none'")


@pytest.mark.parametrize("change", ["train.epochs=3", "run.log_every=5", "train.eval_batch_size=7",
                                    "run.tensorboard=true", "data.num_workers=1"])
def test_resume_may_change_these(capsys, tmp_path, change):
    train_ok(capsys, tmp_path)
    out = train_ok(capsys, tmp_path, "run.resume=auto", change)
    assert "resumed from" in out


def test_resume_on_other_data_is_refused(capsys, tmp_path):
    """Same data.name and shape, other classes: the data identity in the checkpoint differs."""
    for name, classes in (("a.npz", ["cat", "dog"]), ("b.npz", ["car", "bus"])):
        rng = np.random.default_rng(0)
        np.savez(tmp_path / name, x_train=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8),
                 y_train=np.arange(40) % 2, x_test=rng.integers(0, 255, (10, 8, 8),
                                                                 dtype=np.uint8),
                 y_test=np.arange(10) % 2, class_names=np.array(classes))
    run = tmp_path / "run"
    train_ok(capsys, run, "data.name=npz", f"data.root={tmp_path / 'a.npz'}")
    ck = run / "checkpoints" / "last.pt"
    code, out, err = run_main(capsys, "train", *quick(tmp_path / "r2", *TINY, "data.name=npz",
                                                      f"data.root={tmp_path / 'b.npz'}",
                                                      f"run.resume={ck}"))
    assert_refused(code, err, "Cannot resume", "data.root")


@pytest.mark.parametrize("content,expect", [
    ({"weights": torch.zeros(2)}, "not a trainlab checkpoint"),
    ("missing", "lacks optimizer"),
])
def test_foreign_or_incomplete_checkpoints(capsys, tmp_path, content, expect, no_data):
    path = tmp_path / "x.pt"
    if content == "missing":
        content = {"format": "trainlab/1", "model": {}, "config": _saved_config(), "data": {},
                   "state": {}, "rng": []}
    torch.save(content, path)
    code, out, err = run_main(capsys, "train", *quick(tmp_path / "r", *TINY,
                                                      f"run.resume={path}"))
    assert_refused(code, err, str(path), expect)
    if expect.startswith("not"):
        code, out, err = run_main(capsys, "eval", str(path))
        assert_refused(code, err, str(path), expect)


# ---------------------------------------------------------------------------- where results go
@pytest.mark.parametrize("below,expect", [("", "is a file"), ("sub/run", "cannot be created")])
def test_bad_run_dir_is_refused_before_data_is_read(capsys, tmp_path, below, expect, no_data):
    (tmp_path / "f").write_text("x")
    target = tmp_path / "f" / below if below else tmp_path / "f"
    code, out, err = run_main(capsys, "train", *TINY, f"run.dir={target}")
    assert_refused(code, err, str(target), expect)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_honour_the_umask(capsys, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        train_ok(capsys, tmp_path)
    finally:
        os.umask(old)
    for name in ("config.yaml", "summary.json", "metrics.jsonl", "data.json",
                 "checkpoints/last.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_options_and_overrides_in_any_order(capsys, tmp_path):
    train_ok(capsys, tmp_path)
    outs = []
    for argv in (["eval", str(tmp_path), "--split", "val", "run.device=cpu"],
                 ["eval", str(tmp_path), "run.device=cpu", "--split", "val"],
                 ["eval", "--split", "val", str(tmp_path), "run.device=cpu"],
                 ["eval", "run.device=cpu", "--split", "val", str(tmp_path)]):
        code, out, err = run_main(capsys, *argv)
        assert code == 0, err
        outs.append(out)
    assert outs[0] == outs[1] == outs[2] and outs[0].startswith("val accuracy")
    code, out, err = run_main(capsys, "knn", str(tmp_path), "--k", "5", "run.device=cpu")
    assert code == 0 and "k=5" in out, err
    code, again, err = run_main(capsys, "knn", "run.device=cpu", "--k", "5", str(tmp_path))
    assert code == 0 and again == out, err
    code, out, err = run_main(capsys, "config", "show", "optim.lr=0.1", "--bogus")
    assert_refused(code, err, "--bogus")


def test_run_dir_rules_unit(tmp_path):
    """claim_run_dir: an empty or job-only folder is fine; a finished run is refused."""
    from trainlab.config.load import build_config
    from trainlab.errors import ConfigError

    cfg = build_config(None, [f"run.dir={tmp_path}"])
    (tmp_path / "job.yaml").write_text("run: {}\n")  # written by `trainlab submit`
    run_mod.claim_run_dir(tmp_path, cfg, None, True)
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds a run"):
        run_mod.claim_run_dir(tmp_path, cfg, None, True)
    auto = build_config(None, [f"run.dir={tmp_path}", "run.resume=auto"])
    with pytest.raises(ConfigError, match="summary.json"):  # finished, no checkpoint: keep it
        run_mod.claim_run_dir(tmp_path, auto, None, True)
    assert (tmp_path / "job.yaml").is_file()

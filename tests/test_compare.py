"""`trainlab compare`: a sweep folder of real digits runs -> sorted table, CSV and PNG."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import run_cli, stop_after_first_epoch

from trainlab import cli
from trainlab.config.load import build_config
from trainlab.engine.run import train
from trainlab.engine.trainer import Interrupted
from trainlab.launch.compare import compare_sweep
from trainlab.report.plots import _log_axis

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# index -> (optim.lr, run.seed); 0-2 finish, 3 stops after epoch 1 (a local run without
# summary.json: "unfinished"), 4 never started ("not-started")
POINTS = [(0.001, 0), (0.01, 0), (0.01, 1), (0.1, 0), (1.0, 0)]


def _point_dir(i: int, lr: float, seed: int) -> str:
    return f"{i:03d}_optim.lr={lr:g}_run.seed={seed}"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep folder as `trainlab sweep --local` leaves it, with real tiny digits runs."""
    root = tmp_path_factory.mktemp("sweep")
    base = ["model.name=mlp", "model.hidden=[32]", "train.epochs=2", "train.batch_size=128",
            "data.augment=false", "run.progress=false", "run.tensorboard=false"]
    points = []
    for i, (lr, seed) in enumerate(POINTS):
        d = _point_dir(i, lr, seed)
        points.append({"index": i, "dir": d, "overrides": {"optim.lr": lr, "run.seed": seed}})
        cfg = build_config(None, [*base, f"run.dir={root / d}", f"optim.lr={lr}",
                                  f"run.seed={seed}"])
        if i < 3:
            train(cfg)
        elif i == 3:
            with pytest.MonkeyPatch.context() as mp, pytest.raises(Interrupted):
                stop_after_first_epoch(mp)
                train(cfg)
    manifest = {"format": "trainlab-sweep/1", "recipe": None, "recipe_name": "default",
                "overrides": base, "varied": ["optim.lr", "run.seed"],
                "created": "2026-11-27T12:00:00", "points": points,
                "jobs": [{"job_id": "local", "first": 0, "last": 4}], "local": True}
    (root / "sweep.json").write_text(json.dumps(manifest))
    return root


def _summary(sweep: Path, i: int) -> dict:
    return json.loads((sweep / _point_dir(i, *POINTS[i]) / "summary.json").read_text())


def test_rows_match_summaries_and_sort(sweep):
    rows = compare_sweep(sweep)
    assert sorted(r["index"] for r in rows) == [0, 1, 2, 3, 4]
    by_index = {r["index"]: r for r in rows}
    for i in range(3):
        s, r = _summary(sweep, i), by_index[i]
        assert r["status"] == "done"
        assert (r["optim.lr"], r["run.seed"]) == POINTS[i]
        for key in ("best_val_acc", "best_epoch", "final_val_acc", "test_acc", "test_loss",
                    "wall_s"):
            assert r[key] == s[key], key
        assert r["epochs_done"] == s["epochs"] == 2 and r["epochs_total"] == 2
    # the interrupted point: no summary, values from its metrics.jsonl (epoch 1 only)
    run = by_index[3]
    first = json.loads((sweep / run["dir"] / "metrics.jsonl").read_text().splitlines()[-1])
    assert first["kind"] == "epoch" and first["epoch"] == 1
    assert run["status"] == "unfinished" and run["epochs_done"] == 1 and run["epochs_total"] == 2
    assert run["best_val_acc"] == first["val_acc"] and run["test_acc"] is None
    missing = by_index[4]
    assert missing["status"] == "not-started" and missing["best_val_acc"] is None
    # best first; points without a value last
    vals = [r["best_val_acc"] for r in rows[:4]]
    assert vals == sorted(vals, reverse=True) and rows[-1]["index"] == 4
    assert {r["metric"] for r in rows} == {"best_val_acc"}
    # a loss metric sorts lowest first; the running point has no test loss: after the done ones
    by_loss = compare_sweep(sweep, "test_loss")
    losses = [r["test_loss"] for r in by_loss[:3]]
    assert losses == sorted(losses) and {r["index"] for r in by_loss[:3]} == {0, 1, 2}


def test_command_writes_table_csv_png(sweep, capsys):
    assert cli.main(["compare", str(sweep)]) == 0
    out = capsys.readouterr().out
    rows = compare_sweep(sweep)
    assert "5 points, 3 done, 1 unfinished, 1 not-started" in out
    assert "running" not in out, "a local sweep's stopped point must not look running"
    lines = out.splitlines()
    h = next(i for i, line in enumerate(lines) if "best val acc" in line)
    for col in ("optim.lr", "run.seed", "test acc", "best ep", "epochs", "wall", "status"):
        assert col in lines[h]
    body = lines[h + 1:h + 6]
    assert [line.split()[1] for line in body] == [str(r["index"]) for r in rows]  # same order
    assert body[0].split()[-1] == "done" and body[-1].split()[-1] == "not-started"
    assert "1/2" in next(line for line in body if line.endswith("unfinished"))

    with open(sweep / "compare.csv", newline="") as f:
        recs = list(csv.DictReader(f))
    assert [int(r["index"]) for r in recs] == [r["index"] for r in rows]
    assert list(recs[0])[:5] == ["rank", "index", "dir", "optim.lr", "run.seed"]
    for rec, row in zip(recs, rows, strict=True):
        assert rec["status"] == row["status"] and rec["dir"] == row["dir"]
        assert float(rec["optim.lr"]) == row["optim.lr"]
        if row["best_val_acc"] is None:
            assert rec["best_val_acc"] == ""
        else:
            assert float(rec["best_val_acc"]) == pytest.approx(row["best_val_acc"], abs=1e-12)
        if row["status"] == "done":
            assert float(rec["test_acc"]) == pytest.approx(row["test_acc"], abs=1e-12)

    png = (sweep / "compare.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    import matplotlib.image

    img = matplotlib.image.imread(sweep / "compare.png")
    assert img.shape[0] > 200 and img.shape[1] > 300


def test_cli_process_top(sweep):
    r = run_cli("compare", str(sweep), "--top", "2", "--metric", "test_acc")
    assert r.returncode == 0, r.stderr
    assert "sorted by test_acc (highest first, top 2 of 5)" in r.stdout
    body = [line for line in r.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len([line for line in body if line.rstrip().endswith("done")]) == 2
    assert "not-started" not in "".join(body)


def test_missing_or_bad_manifest_is_a_clean_error(tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "trainlab sweep" in err and "Traceback" not in err
    assert cli.main(["compare", str(tmp_path)]) == 2
    assert "has no sweep.json" in capsys.readouterr().err
    (tmp_path / "sweep.json").write_text("{not json")
    assert cli.main(["compare", str(tmp_path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    (tmp_path / "sweep.json").write_text(json.dumps({"format": "other/2", "points": []}))
    assert cli.main(["compare", str(tmp_path)]) == 2
    assert "'other/2'" in capsys.readouterr().err
    (tmp_path / "sweep.json").write_text(json.dumps({"format": "trainlab-sweep/1",
                                                     "points": [{"index": 0}]}))
    assert cli.main(["compare", str(tmp_path)]) == 2
    assert "'points'" in capsys.readouterr().err
    assert cli.main(["compare", str(tmp_path), "--top", "0"]) == 2
    assert "--top must be at least 1" in capsys.readouterr().err


def test_pretraining_sweep_ranks_by_lowest_val_loss(tmp_path, capsys):
    """mae/simclr runs log val_loss but no val_acc: compare says so and ranks by val loss."""
    points = []
    for i, losses in enumerate([[0.9, 0.7, 0.8], [0.8, 0.5, 0.6], [1.0, 0.95]]):
        d = tmp_path / f"p{i}"
        d.mkdir()
        recs = [{"kind": "epoch", "epoch": e + 1, "step": 10 * (e + 1), "val_loss": v,
                 "train_loss": v, "wall_s": e + 1.0} for e, v in enumerate(losses)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        if i < 2:
            (d / "summary.json").write_text(json.dumps({
                "best_val_acc": None, "best_epoch": None, "final_val_acc": None,
                "test_acc": None, "test_loss": losses[-1], "epochs": 3, "wall_s": 3.0,
                "method": "mae"}))
        over = {"model.name": ["vit_tiny", "vit_small", "vit_tiny"][i], "model.hidden": [64, i]}
        points.append({"index": i, "dir": d.name, "overrides": over})
    (tmp_path / "sweep.json").write_text(json.dumps({  # categorical and list values
        "format": "trainlab-sweep/1", "varied": ["model.name", "model.hidden"],
        "points": points}))
    rows = compare_sweep(tmp_path)
    assert [r["index"] for r in rows] == [1, 0, 2]
    assert [r["best_val_loss"] for r in rows] == [0.5, 0.7, 0.95]
    assert [r["best_epoch"] for r in rows] == [2, 2, 2]
    assert {r["metric"] for r in rows} == {"best_val_loss"}
    assert cli.main(["compare", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ranked by the lowest validation loss" in out and "best val loss" in out
    assert "vit_small" in out and "[64, 1]" in out
    assert "[64, 1]" in (tmp_path / "compare.csv").read_text()
    assert (tmp_path / "compare.png").read_bytes().startswith(PNG_MAGIC)


def test_log_axis_rule():
    assert _log_axis("optim.lr", [1e-3, 3e-3])  # lr keys: always log
    assert _log_axis("optim.weight_decay", [1e-4, 1e-2])  # positive, two decades
    assert not _log_axis("optim.weight_decay", [1e-3, 5e-2])
    assert not _log_axis("run.seed", [0, 1, 2])  # not positive

"""`trainlab report RUN_DIR`: RUN_DIR/report.html (one self-contained file) and the same
figures as PNGs in RUN_DIR/plots/.

Sections: summary, resolved config, curves; for classifiers the confusion matrix (counts and
row-normalized), per-class precision/recall/F1, the most-confused pairs, misclassified test
images and a reliability diagram with the ECE, attention maps for ViTs; for pretraining runs
(mae, simclr) kNN and linear-probe accuracy of the features, and MAE reconstructions. The test
split is predicted once, with the run's last checkpoint (the model summary.json's test
numbers come from).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from trainlab.data.pipeline import DataBundle
from trainlab.engine.assemble import load_for_eval
from trainlab.engine.checkpoint import load_run
from trainlab.engine.evaluate import extract_features
from trainlab.engine.knn import knn_predict
from trainlab.engine.predict import CLASSIFIERS, normalize, predict_split, split_images
from trainlab.engine.runstate import read_state
from trainlab.engine.sinks import read_jsonl
from trainlab.errors import TrainlabError
from trainlab.files import atomic_write_text, read_json_dict
from trainlab.methods import Method
from trainlab.models.vit import VisionTransformer
from trainlab.report import html as H
from trainlab.report.attention import attention_figure, last_layer_cls, rollout, to_grid
from trainlab.report.classify import calibration, confusion_matrix, most_confused, per_class
from trainlab.report.figures import fmt_duration, fmt_value
from trainlab.report.mae import write_mae_grid
from trainlab.report.run_figures import (
    confusion_figure,
    curves_figure,
    image_grid_figure,
    reliability_figure,
)

MAX_WRONG = 24  # misclassified images shown
N_SAMPLES = 6  # images for attention maps and reconstructions
PROBE_ITERS = 300
PROBE_MAX_TRAIN = 10_000  # train features the report's probe fits on (a fixed random subset)


def _pct(v: Any) -> str:
    return f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "-"


def _short(name: str, n: int = 12) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def summary_section(run_dir: Path, summary: dict[str, Any], cfg: dict[str, Any],
                    records: list[dict[str, Any]]) -> str:
    """Cards with the headline numbers, then a key/value table of the run."""
    state = read_state(run_dir)
    epochs = [r for r in records if r.get("kind") == "epoch"]
    total = (cfg.get("train") or {}).get("epochs")
    done = summary.get("epochs", epochs[-1]["epoch"] if epochs else 0)
    best = summary.get("best_val_acc")
    if best is None and epochs:
        accs = [r["val_acc"] for r in epochs if isinstance(r.get("val_acc"), (int, float))]
        best = max(accs) if accs else None
    final = summary.get("final_val_acc", epochs[-1].get("val_acc") if epochs else None)
    test = summary.get("test_acc")
    tiles = [(_pct(best), "best val accuracy"), (_pct(final), "final val accuracy"),
             (_pct(test), "test accuracy"), (f"{done}/{total}", "epochs"),
             (fmt_duration(summary.get("wall_s", epochs[-1].get("wall_s") if epochs else None)),
              "training wall time"), (state.get("state", "-"), "status")]
    if test is None and "test_loss" in summary:  # pretraining: no accuracy
        tiles[2] = (f"{summary['test_loss']:.4f}", "test loss")
    job = ((read_json_dict(run_dir / "job.json") or {}).get("jobs") or [{}])[-1]
    m, d = cfg.get("model") or {}, cfg.get("data") or {}
    rows = [("run folder", str(run_dir)), ("model", m.get("name")),
            ("data", d.get("name")), ("method", (cfg.get("method") or {}).get("name")),
            ("parameters", f"{summary['params'] / 1e6:.3f}M" if "params" in summary else None),
            ("epochs done / total", f"{done} / {total}"), ("optimizer steps", summary.get("steps")),
            ("training wall time", fmt_duration(summary.get("wall_s"))),
            ("best val accuracy", fmt_value(best, "_acc")),
            ("best epoch", summary.get("best_epoch")),
            ("final val accuracy", fmt_value(final, "_acc")),
            ("test accuracy", fmt_value(test, "_acc")),
            ("test top-5", fmt_value(summary.get("test_top5"), "_acc")),
            ("test loss", fmt_value(summary.get("test_loss"))),
            ("device", summary.get("device")), ("processes", summary.get("world_size")),
            ("status", state.get("state")), ("error", state.get("error")),
            ("Slurm job id", state.get("slurm_job_id") or job.get("job_id")),
            ("node", state.get("host")), ("restarts", state.get("restarts"))]
    rows = [(k, v) for k, v in rows if v not in (None, "-", "None")]
    return H.cards(tiles) + H.table(["", "value"], [list(r) for r in rows])


class RunReport:
    """Builds the sections of one run's page, writing each figure to plots/."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.plots = self.run_dir / "plots"
        self.sections: list[tuple[str, str, str]] = []

    def add(self, sid: str, title: str, body: str) -> None:
        self.sections.append(H.section(sid, title, body))

    def figure(self, path: Path, alt: str) -> str:
        return H.img(path, alt)

    # ------------------------------------------------------------------ classifier sections
    def classifier(self, method: Method, data: DataBundle, batch: int) -> None:
        names = data.data.class_names
        probs, labels = predict_split(method.model, data, "test", batch)
        if len(labels) == 0:
            self.add("confusion", "Confusion matrix", '<p class="note">The test split is '
                     'empty: no test analysis.</p>')
            return
        conf, preds = probs.max(dim=1)
        k = data.num_classes
        cm = confusion_matrix(labels, preds, k)
        acc = float((preds == labels).double().mean())
        png = confusion_figure(cm, [_short(n) for n in names], self.plots / "confusion.png")
        self.add("confusion", "Confusion matrix (test)",
                 f'<p class="note">{len(labels)} test images, accuracy {acc:.4f}. Rows: true '
                 f'class; columns: predicted. Right: each row divided by its count (recall on '
                 f'the diagonal).</p>' + self.figure(png, "confusion matrix"))
        sc = per_class(cm)
        rows, keys = [], []
        for i, n in enumerate(names):
            p, r, f = (float(v[i]) for v in (sc.precision, sc.recall, sc.f1))
            rows.append([n, f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", int(sc.support[i])])
            keys.append([n, p, r, f, int(sc.support[i])])
        macro = [float(v.mean()) for v in (sc.precision, sc.recall, sc.f1)]
        self.add("per-class", "Per-class precision, recall, F1",
                 f'<p class="note">Macro average: precision {macro[0]:.3f}, recall '
                 f'{macro[1]:.3f}, F1 {macro[2]:.3f}. Click a header to sort.</p>'
                 + H.table(["class", "precision", "recall", "F1", "support"], rows,
                           sortable=True, sort_values=keys, table_id="per-class-table"))
        pairs = most_confused(cm)
        support = cm.sum(dim=1)
        prow = [[names[t], names[p], n, f"{100 * n / max(int(support[t]), 1):.1f}%"]
                for t, p, n in pairs]
        self.add("confused-pairs", "Most-confused class pairs",
                 H.table(["true", "predicted as", "images", "share of the true class"], prow)
                 if prow else '<p class="note">No test image was misclassified.</p>')
        wrong = torch.nonzero(preds != labels).flatten()
        wrong = wrong[conf[wrong].argsort(descending=True)][:MAX_WRONG]  # most confident first
        if len(wrong):
            imgs = split_images(data, "test", wrong.tolist())
            caps = [f"true {_short(names[int(labels[i])], 9)}\n"
                    f"pred {_short(names[int(preds[i])], 9)} ({float(conf[i]):.2f})"
                    for i in wrong]
            png = image_grid_figure(imgs, caps, self.plots / "misclassified.png",
                                    f"Misclassified test images, most confident first "
                                    f"({len(wrong)} of {int((preds != labels).sum())})")
            body = self.figure(png, "misclassified test images")
        else:
            body = '<p class="note">No test image was misclassified.</p>'
        self.add("misclassified", "Misclassified test images", body)
        cal = calibration(probs, labels)
        png = reliability_figure(cal, self.plots / "reliability.png")
        self.add("calibration", "Calibration",
                 f'<p class="note">Expected calibration error (ECE, 15 bins): <b>{cal.ece:.4f}'
                 f'</b>. Bars below the diagonal: over-confident.</p>'
                 + self.figure(png, "reliability diagram"))
        if isinstance(method.model, VisionTransformer):
            self.attention(method.model, data, labels, preds, names)

    def attention(self, vit: VisionTransformer, data: DataBundle, labels: torch.Tensor,
                  preds: torch.Tensor, names: list[str]) -> None:
        n = min(N_SAMPLES, len(labels))
        imgs = split_images(data, "test", range(n))
        was = vit.training
        vit.eval()
        maps = vit.attention_maps(normalize(data.mean, data.std, imgs.to(data.device)))
        vit.train(was)
        size = (data.height, data.width)
        cls = to_grid(last_layer_cls(maps).cpu(), vit.patch_embed.grid, size)
        roll = to_grid(rollout(maps).cpu(), vit.patch_embed.grid, size)
        titles = [f"true {_short(names[int(labels[i])], 9)}\npred "
                  f"{_short(names[int(preds[i])], 9)}" for i in range(n)]
        png = attention_figure(imgs, cls, roll, titles, self.plots / "attention.png")
        self.add("attention", "Attention maps (ViT)",
                 f'<p class="note">First {n} test images. Middle row: the last layer\'s '
                 f'cls-token attention (mean over heads); bottom: attention rollout through all '
                 f'{len(maps)} layers.</p>' + self.figure(png, "attention maps"))

    # ------------------------------------------------------------------ pretraining sections
    def ssl(self, method: Method, data: DataBundle, cfg: Any, batch: int) -> None:
        model = method.model
        bank, bank_y = extract_features(model, data.full_loader("train", batch))
        q, q_y = extract_features(model, data.full_loader("test", batch))
        if len(q_y) == 0 or len(bank_y) == 0:
            self.add("ssl", "Features: kNN and linear probe", '<p class="note">Empty train or '
                     'test split: nothing to measure.</p>')
            return
        m = cfg.method
        knn = knn_predict(q, bank, bank_y, data.num_classes, m.knn_k, m.knn_temperature)
        knn_acc = float((knn == q_y).float().mean())
        keep = torch.randperm(len(bank_y), generator=torch.Generator().manual_seed(0))
        keep = keep[:PROBE_MAX_TRAIN].sort().values  # the probe fits in seconds
        from sklearn.linear_model import LogisticRegression  # 0.6 s to import: only here

        probe = LogisticRegression(max_iter=PROBE_ITERS)
        probe.fit(bank.cpu()[keep].numpy(), bank_y.cpu()[keep].numpy())
        probe_acc = float(np.mean(probe.predict(q.cpu().numpy()) == q_y.cpu().numpy()))
        self.add("ssl", "Features: kNN and linear probe",
                 H.cards([(f"{100 * knn_acc:.2f}%", f"kNN test accuracy (k={m.knn_k})"),
                          (f"{100 * probe_acc:.2f}%", "linear probe test accuracy")])
                 + f'<p class="note">Frozen, L2-normalized features of the encoder. kNN: each '
                 f'of the {len(q_y)} test images votes over its {m.knn_k} most similar of '
                 f'{len(bank_y)} train images (weights exp(sim / {m.knn_temperature:g})), as '
                 f'`trainlab knn`. Linear probe: logistic regression (scikit-learn, '
                 f'{PROBE_ITERS} iterations) on {min(len(bank_y), PROBE_MAX_TRAIN)} train '
                 f'features, scored on test. For the '
                 f'full probe, train method.name=linear_probe with model.init=this run.</p>')

    def mae(self, method: Method, data: DataBundle) -> None:
        n = min(N_SAMPLES, len(data.split("test")[1]))
        if n == 0:
            return
        imgs = normalize(data.mean, data.std, split_images(data, "test", range(n)).to(data.device))
        png = write_mae_grid(method, imgs, data.mean, data.std, self.plots / "mae.png",
                             "MAE reconstructions of test images")
        self.add("reconstructions", "MAE reconstructions",
                 '<p class="note">Original, what the encoder sees (masked patches grey), the '
                 'decoder\'s prediction, and the prediction with the visible patches pasted '
                 'back.</p>' + self.figure(png, "MAE reconstructions"))


def write_run_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report.html and RUN_DIR/plots/*.png; returns the HTML path."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() and not (run_dir / "checkpoints").is_dir():
        where = "does not exist" if not run_dir.exists() else "holds no trainlab run"
        raise TrainlabError(f"'{run_dir}' {where} (no config.yaml or checkpoints/). Pass a run "
                            f"folder made by `trainlab train`, or a sweep folder (with "
                            f"sweep.json).")
    t0 = time.perf_counter()
    summary = read_json_dict(run_dir / "summary.json") or {}
    records = read_jsonl(run_dir / "metrics.jsonl")
    try:
        cfg_text = (run_dir / "config.yaml").read_text()
        cfg_dict = yaml.safe_load(cfg_text) or {}
    except (OSError, yaml.YAMLError):
        cfg_text, cfg_dict = "(config.yaml missing or unreadable)", {}
    rep = RunReport(run_dir)
    rep.add("summary", "Summary", summary_section(run_dir, summary, cfg_dict, records))
    lines = len(cfg_text.splitlines())
    rep.add("config", "Resolved config",
            f"<details><summary>config.yaml: every key as the run used it ({lines} lines; "
            f"click to show)</summary><pre>{H.esc(cfg_text)}</pre></details>")
    title = f"{cfg_dict.get('method', {}).get('name')} {cfg_dict.get('model', {}).get('name')} " \
            f"on {cfg_dict.get('data', {}).get('name')}"
    png = curves_figure(records, rep.plots / "curves.png", title)
    rep.add("curves", "Training curves", rep.figure(png, "training curves"))
    if (run_dir / "checkpoints" / "last.pt").is_file():
        cfg, ckpt, p = load_run(run_dir, "last")
        try:
            data, method = load_for_eval(cfg, ckpt, p)
        except TrainlabError as e:  # e.g. the page is drawn where the data is not
            rep.add("test", "Test analysis", f'<p class="note bad">No test analysis: the '
                    f'run\'s data could not be loaded here ({H.esc(e)}).</p>')
        else:
            method.eval()
            batch = cfg.train.eval_batch_size
            if cfg.method.name in CLASSIFIERS:
                rep.classifier(method, data, batch)
            else:
                rep.ssl(method, data, cfg, batch)
                if cfg.method.name == "mae":
                    rep.mae(method, data)
    else:
        rep.add("test", "Test analysis", '<p class="note">No checkpoint yet '
                '(checkpoints/last.pt): the test analysis appears once an epoch is done.</p>')
    sub = (f"{run_dir.resolve()} — written {time.strftime('%Y-%m-%d %H:%M:%S')} in "
           f"{time.perf_counter() - t0:.1f}s")
    out = run_dir / "report.html"
    atomic_write_text(out, H.page(f"trainlab run: {title}", sub, rep.sections))
    return out

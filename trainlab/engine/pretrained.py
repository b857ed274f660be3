"""Weights from earlier runs: `model.init` (a pretrained encoder) and a method's own state.

`model.init=PATH` (a checkpoint .pt, or a run dir -> its checkpoints/last.pt) loads every
weight of the freshly built model except its classifier head (`head.*`): the encoder a
self-supervised run (mae, simclr, dino: its teacher) or any other run trained. A method's own
modules (the MAE decoder, the SimCLR projection head, DINO's student, heads and centre) are
saved beside the model under the checkpoint's "method" entry, so a resume restores them and
`model.init` never sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from trainlab.config.load import config_from_dict
from trainlab.config.schema import Config
from trainlab.engine.checkpoint import (
    NEEDED_TO_EVALUATE,
    check_contents,
    checkpoint_in,
    load_checkpoint,
)
from trainlab.errors import ConfigError
from trainlab.models.state import copy_state, match_state

HEAD = "head."  # the classifier head: never loaded from another run


@dataclass
class Pretrained:
    """A checkpoint to initialize from: its path, its run's config and its contents."""

    path: Path
    cfg: Config
    ckpt: dict[str, Any]

    def describe(self) -> str:
        """One line on what the checkpoint holds, e.g. "vit_tiny (dim 32, depth 2, ...)"."""
        m, c = self.cfg.model, self.cfg
        if m.name.startswith("vit"):
            arch = (f"{m.name} (dim {m.dim}, depth {m.depth}, heads {m.heads}, patch_size "
                    f"{m.patch_size}, image_size {m.image_size})")
        elif m.name == "cnn":
            arch = f"cnn (widths {m.widths}, stem_stride {m.stem_stride})"
        elif m.name == "mlp":
            arch = f"mlp (hidden {m.hidden})"
        else:
            arch = m.name
        data = self.ckpt.get("data", {})
        shape = f"{data.get('channels')}x{data.get('height')}x{data.get('width')}"
        return f"{arch} trained with method {c.method.name} on {c.data.name} {shape} images"

    def stats_for(self, cfg: Config) -> tuple[list[float], list[float]] | None:
        """The normalization the encoder was trained with, when `cfg` uses the same data set
        (so a probe on a few labels normalizes exactly as pretraining did); else None."""
        data = self.ckpt["data"]
        if cfg.data.name != self.cfg.data.name or cfg.data.channels != self.cfg.data.channels:
            return None
        return data["mean"], data["std"]


def resolve_checkpoint(path: str, key: str = "model.init", finished: bool = False) -> Path:
    """A checkpoint file or run dir -> the .pt path; ConfigError naming `key` if absent.

    `finished` (model.init: the encoder to start from): a run folder must hold a finished run
    (summary.json), whose last.pt is the final encoder. One still training (or stopped early)
    would silently give whatever epoch it had reached, e.g. to a sweep point started before
    the point it builds on was done; the checkpoint file itself can still be given on purpose.
    (`trainlab knn` measures any checkpoint, finished or not.)"""
    p = checkpoint_in(
        path, key,
        no_last="Point it at the run folder of a finished pretraining run, or at a .pt file.",
        missing="Give the run folder of a pretraining run (e.g. runs/mae-...) or its "
        "checkpoints/last.pt.")
    if finished and Path(path).is_dir() and not (Path(path) / "summary.json").is_file():
        raise ConfigError(
            f"{key}={path!r} is a run that has not finished (no summary.json): its "
            f"checkpoints/last.pt holds the weights of whatever epoch it reached. Wait until it "
            f"has finished (`trainlab status {path}`), or, to start from that partial encoder "
            f"on purpose, give the file: {key}={p}.")
    return p


def load_pretrained(path: str, key: str = "model.init", finished: bool = False) -> Pretrained:
    """Read the checkpoint at `path` (file or run dir) with its config (`finished`: see
    `resolve_checkpoint`)."""
    p = resolve_checkpoint(path, key, finished)
    ckpt = load_checkpoint(p)
    check_contents(ckpt, p, NEEDED_TO_EVALUATE)
    return Pretrained(p, config_from_dict(ckpt["config"], f"checkpoint {p}"), ckpt)


def load_encoder(model: nn.Module, pre: Pretrained, model_name: str,
                 key: str = "model.init") -> list[str]:
    """Copy every weight of `pre` except `head.*` into `model` (whose head stays as built).

    Every non-head key must exist on both sides with the same shape; otherwise ConfigError
    listing the first few differences and what the checkpoint holds. Returns the loaded keys.
    """
    saved = {k: v for k, v in pre.ckpt["model"].items() if not k.startswith(HEAD)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(HEAD)}
    bad = match_state(own, saved)
    if bad:
        raise ConfigError(
            f"{key}={pre.path} holds {pre.describe()}; its weights do not fit "
            f"model.name={model_name} as configured now: {bad.describe()}. Use the same "
            f"model settings as that run (model.name, model.dim, model.depth, model.heads, "
            f"model.patch_size, model.widths...; see its config.yaml).")
    copy_state(own, saved)
    return list(own)


def method_state(method: nn.Module) -> dict[str, Any]:
    """{"method": state of the method's own modules} (everything outside `method.model`), or
    {} for methods without any (supervised, probes): merged into each checkpoint."""
    sd = {k: v for k, v in method.state_dict().items() if not k.startswith("model.")}
    return {"method": sd} if sd else {}


def load_method_state(method: nn.Module, ckpt: dict[str, Any], path: Path) -> None:
    """Restore `method_state` from `ckpt` (the decoder of an MAE run...) into `method`."""
    want = method_state(method).get("method", {})
    if not want:
        return
    saved = ckpt.get("method", {})
    bad = match_state(want, saved)
    if bad:
        raise ConfigError(
            f"Checkpoint {path} lacks the state of method {type(method).__name__} as configured "
            f"now ({bad.describe(own='this method')}). Resume with the same method.* settings as "
            f"the saved run (see its config.yaml).")
    copy_state(want, saved)  # `want` holds the method's own tensors: copied in place

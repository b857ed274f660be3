"""Atomic checkpoints loaded safely (`weights_only=True`), RNG capture, resume resolution."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainlab.config.load import config_from_dict, to_dict
from trainlab.config.schema import Config
from trainlab.dist.setup import all_gather_objects
from trainlab.errors import ConfigError, TrainlabError
from trainlab.files import atomic_write_bytes

FORMAT = "trainlab/1"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temp file, then rename: a crash never leaves a half-written checkpoint."""
    atomic_write_bytes(Path(path), lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with `weights_only=True` (no arbitrary code from pickles) on the CPU."""
    p = Path(path)
    if not p.is_file():
        raise TrainlabError(f"Checkpoint '{p}' does not exist.")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or not a trainlab checkpoint
        raise TrainlabError(
            f"Cannot read checkpoint '{p}': {type(e).__name__}: {str(e).splitlines()[0]}. "
            f"The file is damaged or is not a trainlab checkpoint; point to another checkpoint "
            f"(checkpoints/last.pt or checkpoints/best.pt of a run)."
        ) from None


def rng_state() -> dict[str, Any]:
    """Every RNG the training step may draw from, in a form `weights_only` loading accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _to_lists(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any] | list[dict[str, Any]], rank: int = 0) -> None:
    """Restore `rng_state()` output; a list holds one state per rank (rank 0's if too short)."""
    if isinstance(state, list):
        state = state[rank] if rank < len(state) else state[0]
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def checkpoint_in(path: str, key: str, no_last: str, missing: str) -> Path:
    """A checkpoint file, or a run folder (its checkpoints/last.pt), given as config `key`.

    Raises ConfigError "`key`=`path` <no_last>" for a folder without last.pt and
    "`key`=`path`: <missing>" when nothing exists there.
    """
    p = Path(path)
    if p.is_dir():
        last = p / "checkpoints" / "last.pt"
        if last.is_file():
            return last
        raise ConfigError(f"{key}={path!r} is a folder without checkpoints/last.pt. {no_last}")
    if not p.is_file():
        raise ConfigError(f"{key}={path!r}: no such checkpoint file or run folder. {missing}")
    return p


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """`run.resume` -> checkpoint path: a file, a run dir (its last.pt), or "auto"."""
    if resume is None:
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    return checkpoint_in(
        resume, "run.resume",
        no_last="Point it at a run folder that has trained at least one step, at a .pt file, "
        "or use run.resume=auto.",
        missing="Use a path to a .pt file, a run folder, or run.resume=auto to continue the run "
        "in run.dir if there is one.")


class Checkpointer:
    """Writes `<run_dir>/checkpoints/<name>` (rank 0 writes; every rank calls `save`, since the
    RNG states of all ranks are gathered into the file). `extra()` adds what defines the run
    (config, data identity, the method's own modules) to every checkpoint."""

    def __init__(self, run_dir: Path, is_main: bool,
                 extra: Callable[[], dict[str, Any]] = dict) -> None:
        self.run_dir, self.is_main, self.extra = Path(run_dir), is_main, extra

    def path(self, name: str) -> Path:
        return self.run_dir / "checkpoints" / name

    def save(self, name: str, payload: dict[str, Any]) -> Path:
        """Write `payload` + format, per-rank RNG states and `extra()`; returns the path."""
        rngs = all_gather_objects(rng_state())
        path = self.path(name)
        if self.is_main:
            save_checkpoint(path, {"format": FORMAT, **payload, "rng": rngs, **self.extra()})
        return path


def load_run(path: str | Path, which: str = "last") -> tuple[Config, dict[str, Any], Path]:
    """A checkpoint file or run dir -> (its config, the checkpoint, the checkpoint path)."""
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / f"{which}.pt"
        if not p.is_file():
            raise ConfigError(f"No checkpoint {p}: is '{path}' a trainlab run folder that trained "
                              f"at least one epoch?")
    ckpt = load_checkpoint(p)
    check_contents(ckpt, p, NEEDED_TO_EVALUATE)
    return config_from_dict(ckpt["config"], f"checkpoint {p}"), ckpt, p


# ---------------------------------------------------------------------------- resume rules
# Keys that may differ between a checkpoint's run and the config that resumes it: where and
# how the run is watched, how long it trains (extend with train.epochs), how data is read
# (not which data). Every other key defines the run and must be the same.
RESUME_MAY_CHANGE = frozenset({
    "run.dir", "run.resume", "run.overwrite", "run.device", "run.log_every", "run.progress",
    "run.tensorboard", "run.report", "run.max_requeues", "run.dist_timeout_s", "run.threads",
    "train.epochs", "train.eval_batch_size", "train.compile",
    "data.num_workers", "data.cache_dir", "data.download", "data.in_memory_max_gb",
    "method.knn_every", "method.knn_k", "method.knn_temperature",
})
NEEDED_TO_RESUME = ("model", "optimizer", "state", "rng", "config", "data")
NEEDED_TO_EVALUATE = ("model", "config", "data")
DATA_IDENTITY = ("name", "class_names", "channels", "height", "width", "num_classes")


def check_contents(ckpt: Any, path: Path, needed: tuple[str, ...]) -> None:
    """ConfigError unless `ckpt` is a trainlab checkpoint holding every entry of `needed`."""
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise ConfigError(
            f"'{path}' is a PyTorch file but not a trainlab checkpoint (it has no config and "
            f"model entries). Point to checkpoints/last.pt or best.pt of a trainlab run.")
    missing = [k for k in needed if k not in ckpt]
    if missing:
        raise ConfigError(
            f"Checkpoint '{path}' lacks {', '.join(missing)}: it was damaged, or written by "
            f"another tool. Use another checkpoint of the run (checkpoints/best.pt), or start "
            f"over with a new run.dir.")


def config_differences(saved: dict[str, Any], cfg: Config,
                       ignore: frozenset[str] = RESUME_MAY_CHANGE) -> list[str]:
    """["key: saved X, now Y", ...] for every key outside `ignore` where the run saved as
    `saved` (a `to_dict` config) and `cfg` differ. Keys the saved run did not know count with
    their default."""
    now = to_dict(cfg)
    try:
        old = to_dict(config_from_dict(saved, "the checkpoint's config"))
    except TrainlabError as e:
        return [f"the saved config is not readable here ({e})"]
    return [f"{s}.{k}: saved {old[s][k]!r}, now {v!r}" for s, body in now.items()
            for k, v in body.items() if f"{s}.{k}" not in ignore and old[s][k] != v]


def check_resume(ckpt: dict[str, Any], cfg: Config, path: Path) -> None:
    """ConfigError naming every key that differs between the checkpoint's run and `cfg`
    (outside RESUME_MAY_CHANGE): a resume continues the same run, never another one."""
    check_contents(ckpt, path, NEEDED_TO_RESUME)
    diffs = config_differences(ckpt["config"], cfg)
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        raise ConfigError(
            f"Cannot resume from {path}: it belongs to a run with other settings ({shown}). "
            f"Resume with the settings of that run (its config.yaml; only "
            f"{', '.join(sorted(RESUME_MAY_CHANGE - {'run.dir', 'run.resume'}))} may change), "
            f"or start a new run with another run.dir.")


def check_same_data(saved: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """ConfigError when the data loaded now is not the data the checkpoint trained on (same
    name, class names and image shape)."""
    diffs = [f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in DATA_IDENTITY
             if saved.get(k) != now.get(k)]
    if diffs:
        raise ConfigError(
            f"Cannot resume from {path}: the data differs from the data it trained on "
            f"({'; '.join(diffs)}). Point data.root at the same data, or start a new run with "
            f"another run.dir.")

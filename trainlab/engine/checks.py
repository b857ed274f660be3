"""The one config check every command runs before it reads data: `check_config`.

`trainlab.config.validate` checks every key against its schema rule and the rules between keys
(a leaf, no registry); this module adds the names picked from the registries (data sets,
models, methods), which only a floor above data/models/methods may import. `config show`,
`data preview-augment`, `train`, `lr-find`, `submit` and sweep points all call it, so they
accept and reject the same configs with the same messages.
"""

from __future__ import annotations

from trainlab.config.load import parse_override
from trainlab.config.schema import Config
from trainlab.config.validate import validate
from trainlab.data.augment import resolve_augment
from trainlab.data.sources import source_names
from trainlab.errors import ConfigError
from trainlab.methods import method_names
from trainlab.methods.simclr import SELF_SUPERVISED, check_ssl_options
from trainlab.models import list_models
from trainlab.models.norm import check_norm


def _known(key: str, value: str, valid: list[str], what: str, hint: str) -> None:
    if value not in valid:
        raise ConfigError(f"Unknown {what} {key}={value!r}. Valid names: {', '.join(valid)}"
                          f"{hint}.")


def check_config(cfg: Config) -> None:
    """ConfigError (one paragraph: the key, the bad value, what is allowed, a suggestion) for
    the first invalid value of `cfg`: `validate(cfg)`, then model.name, data.name and
    method.name against the registered names, and the method's needs that the config alone
    decides (a model.norm the model family has; mae, dino: a ViT backbone; mae/simclr/dino:
    no train.ema_decay, no train.tta, no train.loss other than cross_entropy). Reads no data, writes
    nothing."""
    validate(cfg)
    _known("model.name", cfg.model.name, [name for name, _, _ in list_models()], "model",
           " (`trainlab models` lists them with sizes)")
    _known("data.name", cfg.data.name, source_names(), "data set",
           " (the README's Data section describes each)")
    _known("method.name", cfg.method.name, method_names(), "method",
           " (see the README's Self-supervised section)")
    family = {name: fam for name, fam, _ in list_models()}[cfg.model.name]
    check_norm(cfg.model.norm, family, cfg.model.name)
    if cfg.method.name == "mae" and family != "vit":
        raise ConfigError(
            f"method.name=mae needs a Vision Transformer backbone (it drops patch tokens), but "
            f"model.name={cfg.model.name} is a {family} model. Use model.name=vit_tiny (or "
            f"vit_small / vit_base), or method.name=simclr for CNNs.")
    if cfg.method.name in SELF_SUPERVISED and cfg.train.loss != "cross_entropy":
        raise ConfigError(
            f"train.loss={cfg.train.loss} is a classification loss, but method.name="
            f"{cfg.method.name} pretrains without labels (it has its own loss). Set train.loss="
            f"cross_entropy, or use it with method.name=supervised, linear_probe or finetune.")
    if cfg.method.name == "dino" and family != "vit":
        raise ConfigError(
            f"method.name=dino needs a Vision Transformer backbone (the student reads the small "
            f"local crops with a resized position embedding), but model.name="
            f"{cfg.model.name} is a {family} model. Use model.name=vit_tiny (or vit_small / "
            f"vit_base), or method.name=simclr for CNNs.")
    if cfg.method.name in SELF_SUPERVISED:
        check_ssl_options(cfg)
    if cfg.train.tta == "flip" and not resolve_augment(cfg.data).flip:
        raise ConfigError(_tta_without_flips(cfg))


# keys that decide which images are in the test split (test is carved before val), and in the
# val split: an evaluation of a saved run must not change them, or the split it measures would
# hold images the run trained on
TEST_SPLIT_KEYS = ("data.test_fraction", "data.split_seed")
VAL_SPLIT_KEYS = (*TEST_SPLIT_KEYS, "data.val_fraction")


def _value(cfg: Config, key: str) -> object:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def check_same_splits(run_cfg: Config, cfg: Config, command: str, split: str) -> None:
    """ConfigError when `cfg` (a saved run's config `run_cfg` with the overrides of `command`,
    e.g. `trainlab eval`) carves `split` (train, val or test) differently from the run."""
    keys = VAL_SPLIT_KEYS if split == "val" else TEST_SPLIT_KEYS
    changed = [(k, _value(run_cfg, k), _value(cfg, k)) for k in keys
               if _value(run_cfg, k) != _value(cfg, k)]
    if changed:
        shown = ", ".join(f"{k}={new} (the run used {old})" for k, old, new in changed)
        raise ConfigError(
            f"`trainlab {command}` measures the {split} split the run was trained with, but "
            f"{shown} would carve it anew, out of images the run may have trained on, and the "
            f"accuracy would mean nothing. Leave {'these keys' if len(changed) > 1 else 'it'} "
            f"out; to measure on other images, train a new run.")


def _tta_without_flips(cfg: Config) -> str:
    """Why train.tta=flip is refused: the run trains without horizontal flips, because
    augmentation is off (by the user or the method's defaults) or data.flip is (by default)."""
    d = cfg.data
    head = ("train.tta=flip averages each evaluated image with its mirror, but this run trains "
            "without horizontal flips")
    tail = ("so the model never learned mirrored images. Set train.tta=none, or train with "
            "flips if the classes look the same mirrored: ")
    if not d.augment:
        filled = any(a.key == "data.augment" for a in cfg.method_defaults)
        why = f", the {cfg.method.name} default," if filled else ""
        return (f"{head} (data.augment=false{why} turns all augmentation off), {tail}"
                f"data.augment=true data.flip=true.")
    why = ("data.flip=false" if d.flip is False else
           f"data.flip is unset and {d.name}'s default is no flips")
    return f"{head} ({why}), {tail}data.flip=true."


# keys a measurement of a saved run (`trainlab eval`, `trainlab knn`) reads: where the data is
# and how it is read, the device and threads, how evaluation batches run; plus each command's own
MEASURE_KEYS = frozenset({
    "run.device", "run.threads", "run.progress", "data.name", "data.root", "data.download",
    "data.cache_dir", "data.in_memory", "data.in_memory_max_gb", "data.num_workers",
    "data.skip_bad_files", "data.coarse_labels", "data.labels_fraction", "data.image_size",
    "data.channels", *VAL_SPLIT_KEYS, "train.eval_batch_size", "train.precision",
    "train.channels_last", "train.compile", "train.tf32",
})
MEASURE_OWN_KEYS = {"eval": frozenset({"train.tta"}),
                    "knn": frozenset({"method.knn_k", "method.knn_temperature"})}


def check_measure_overrides(overrides: list[str] | tuple, command: str) -> None:
    """ConfigError for an override `trainlab eval` or `trainlab knn` (`command`) would accept
    and never use (e.g. `knn RUN train.tta=flip`, `eval RUN optim.lr=1`): the saved weights are
    measured as they are, so keys that shape training change nothing."""
    own = MEASURE_OWN_KEYS[command]
    keys = [parse_override(o)[0] for o in overrides]
    unused = [k for k in keys if k not in MEASURE_KEYS | own]
    if unused:
        raise ConfigError(
            f"`trainlab {command}` measures the saved weights as they are, so "
            f"{', '.join(unused)} would change nothing (a key that shapes training, not this "
            f"measurement). Leave {'them' if len(unused) > 1 else 'it'} out; to see its effect, "
            f"train a run with it. Keys {command} reads: {', '.join(sorted(own))}, where the "
            f"data is and how it is read (data.root, data.num_workers...), run.device, "
            f"run.threads, train.eval_batch_size.")

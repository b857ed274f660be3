"""Load, merge, type-check and dump configs: defaults <- the method's defaults (for keys left
unset, `method_defaults`) <- recipe YAML <- `key=value` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from trainlab.config import method_defaults
from trainlab.config.schema import SECTIONS, Config
from trainlab.errors import ConfigError

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULL = {"null", "none", "~", ""}


def all_keys() -> list[str]:
    """Every valid dotted key, e.g. `optim.lr`."""
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def _closest(key: str, choices: list[str]) -> str:
    near = difflib.get_close_matches(key, choices, n=3, cutoff=0.5)
    if not near:  # also try the last part alone (`lr` -> `optim.lr`)
        last = key.rsplit(".", 1)[-1]
        near = [c for c in choices if c.rsplit(".", 1)[-1] == last][:3]
    return f" Did you mean: {', '.join(near)}?" if near else ""


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Convert `value` (YAML or command line) to the annotated type `tp`, or fail clearly."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in _NULL):
            return None
        return coerce(value, args[0], key, source)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            text = value.strip().strip("[]")
            value = [v for v in (p.strip() for p in text.split(",")) if v]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return [coerce(v, inner, key, source) for v in value]
    bad = ConfigError(
        f"Config key '{key}' (from {source}) got {value!r}, which is not a valid "
        f"{_type_name(tp)}. Give a value such as {_example(tp)}."
    )
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, str)) and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                raise bad from None
            if f.is_integer():
                return int(f)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a schema bug, not a user one


def _example(tp: Any) -> str:
    examples = {bool: "true or false", int: "an integer like 128", float: "a number like 3e-4"}
    return examples.get(tp, "a word")


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(
            f"Cannot read the override '{text}': overrides look like key=value, for example "
            f"optim.lr=3e-4 or model.name=resnet18."
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict,)):
        value = raw
    return key, value


def _check_key(key: str, source: str) -> tuple[str, str]:
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ConfigError(
            f"Unknown config key '{key}' (from {source}).{_closest(key, all_keys())} Keys look "
            f"like section.name with sections {', '.join(SECTIONS)}; `trainlab config show` "
            f"lists them all."
        )
    section, name = parts
    names = [f.name for f in dataclasses.fields(SECTIONS[section])]
    if name not in names:
        raise ConfigError(
            f"Unknown config key '{key}' (from {source}).{_closest(key, all_keys())} Valid keys "
            f"in '{section}': {', '.join(names)}."
        )
    return section, name


SWEEP_SECTION = "sweep"  # a recipe's optional grid for `trainlab sweep` (not a config section)
SWEEP_FIELDS = ("grid", "points", "seeds")


@dataclasses.dataclass(frozen=True)
class RecipeSweep:
    """A recipe's `sweep:` section: `grid` {dotted key: [typed values]} (product of the
    values); `points`, explicit settings [{dotted key: typed value}] that all name the same
    keys, for keys that must change together (batch size with its lr, epochs per model); the
    sweep is points x grid product x `seeds` runs (run.seed, run.seed+1, ...)."""

    grid: dict[str, list[Any]]
    seeds: int = 1
    points: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML into {dotted key: raw value}. A `sweep:` section is not part of the
    config (a plain `trainlab train` trains the base config); `read_sweep` reads it."""
    flat: dict[str, Any] = {}
    for section, body in _read_sections(path).items():
        if section == SWEEP_SECTION:
            continue
        for name, value in body.items():
            flat[f"{section}.{name}"] = value
    return flat


def read_sweep(path: str | Path) -> RecipeSweep | None:
    """The recipe's `sweep:` section, type-checked, or None when it has none, e.g.
    `sweep: {grid: {optim.lr: [1e-4, 1e-3, 1e-2]}, seeds: 1}`. Every grid key must be a config
    key with a non-empty list of values of its type (values are range-checked later, with
    each sweep point's whole config)."""
    body = _read_sections(path).get(SWEEP_SECTION)
    if body is None:
        return None
    where = f"recipe '{path}', section sweep"
    unknown = [k for k in body if k not in SWEEP_FIELDS]
    if unknown:
        near = _closest(str(unknown[0]), list(SWEEP_FIELDS))
        raise ConfigError(
            f"In {where}: unknown entry '{unknown[0]}'.{near} A sweep section holds grid (a "
            f"mapping of config keys to lists of values), points (a list of settings that "
            f"name the same keys) and seeds (runs per point), e.g. "
            f"'sweep: {{grid: {{optim.lr: [1e-3, 1e-2]}}, seeds: 1}}'.")
    grid_body = body.get("grid") or {}
    if not isinstance(grid_body, dict):
        raise ConfigError(f"In {where}: grid must map config keys to lists of values (got "
                          f"{grid_body!r}), e.g. 'grid: {{optim.lr: [1e-3, 1e-2]}}'.")
    grid: dict[str, list[Any]] = {}
    for key, values in grid_body.items():
        section, name = _check_key(str(key), where)
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"In {where}: grid entry '{key}' must be a non-empty list of values (got "
                f"{values!r}), e.g. '{key}: [a, b]' (a list-valued key takes a list of lists).")
        tp = _field_types(SECTIONS[section])[name]
        grid[str(key)] = [coerce(v, tp, str(key), where) for v in values]
    points = _sweep_points(body.get("points") or [], where)
    both = sorted(set(grid) & set(points[0] if points else {}))
    if both:
        raise ConfigError(f"In {where}: {both[0]} is in both grid and points; give it once.")
    seeds = body.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"In {where}: seeds must be a whole number >= 1 (got {seeds!r}), "
                          f"e.g. 'seeds: 3' for run.seed, run.seed+1, run.seed+2.")
    if seeds > 1 and "run.seed" in {*grid, *(points[0] if points else {})}:
        raise ConfigError(f"In {where}: seeds and a run.seed grid/point both set seeds; use "
                          f"one.")
    if not grid and not points and seeds == 1:
        raise ConfigError(f"In {where}: nothing to sweep; give grid (config key -> values), "
                          f"points and/or seeds > 1.")
    return RecipeSweep(grid, seeds, points)


def _sweep_points(body: Any, where: str) -> list[dict[str, Any]]:
    """The `points:` list of a sweep section, each a mapping of config keys to typed values,
    all naming the same keys (so every point has a value for each compared column)."""
    if not isinstance(body, list) or not all(isinstance(p, dict) and p for p in body):
        raise ConfigError(f"In {where}: points must be a list of mappings of config keys to "
                          f"values (got {body!r}), e.g. 'points: [{{train.batch_size: 64, "
                          f"optim.lr: 2e-3}}, {{train.batch_size: 256, optim.lr: 8e-3}}]'.")
    points = []
    for i, point in enumerate(body):
        typed = {}
        for key, value in point.items():
            section, name = _check_key(str(key), where)
            tp = _field_types(SECTIONS[section])[name]
            typed[str(key)] = coerce(value, tp, str(key), where)
        if points and set(typed) != set(points[0]):
            raise ConfigError(
                f"In {where}: point {i} names {', '.join(sorted(typed))} but point 0 names "
                f"{', '.join(sorted(points[0]))}; every point must set the same keys.")
        points.append(typed)
    return points


def _read_sections(path: str | Path) -> dict[str, dict[str, Any]]:
    """The recipe's YAML as {section: mapping}; every section must be a config section or
    `sweep`, and a mapping."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(
            f"Recipe '{path}' is a folder, not a file. Pass the path of a YAML recipe file "
            f"(e.g. recipes/digits_cnn.yaml), or no recipe to use the defaults."
        )
    if not p.is_file():
        hint = "" if p.suffix in (".yaml", ".yml") else " Recipes are YAML files (.yaml)."
        raise ConfigError(
            f"Recipe file '{path}' does not exist.{hint} Pass the path of a YAML recipe "
            f"(see the recipes/ folder for examples), or no recipe to use the defaults."
        )
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(
            f"Cannot read recipe file '{path}': {e.strerror or e}. Check its permissions "
            f"(it must be readable by you)."
        ) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"Recipe file '{path}' is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
            f"{e.start} cannot be decoded). Save it as UTF-8, e.g. `iconv -f latin1 -t utf-8`."
        ) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        msg = str(e).replace("\n", " ")
        raise ConfigError(f"Recipe file '{path}' is not valid YAML: {msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"Recipe file '{path}' must be a mapping of sections (run:, data:, ...)."
        )
    for section, body in data.items():
        if section not in SECTIONS and section != SWEEP_SECTION:
            near = _closest(str(section), all_keys() if not isinstance(body, dict)
                            else [*SECTIONS, SWEEP_SECTION])
            raise ConfigError(
                f"Recipe '{path}' has an unknown top-level section '{section}'.{near} A recipe "
                f"maps sections ({', '.join(SECTIONS)}) to their keys, e.g. 'optim: {{lr: 0.1}}'"
                f", plus an optional '{SWEEP_SECTION}:' grid for `trainlab sweep`."
            )
        if not isinstance(body, dict):
            raise ConfigError(
                f"In recipe '{path}', '{section}' must be a section mapping keys to values "
                f"(got {body!r}), e.g. '{section}: {{key: value}}' or one 'key: value' per "
                f"indented line below '{section}:'."
            )
    return data


def build_config(recipe: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """defaults <- the method's defaults <- recipe <- overrides, type-checked (values are
    validated by `validate`). The method's defaults (`method_defaults.METHOD_DEFAULTS`) fill
    only the keys neither the recipe nor an override names, whatever value those give."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if recipe is not None:
        layers.append((f"recipe {recipe}", read_recipe(recipe)))
    layers.append(("the command line", dict(parse_override(o) for o in overrides)))
    user_set = {key for _, flat in layers for key in flat}
    return method_defaults.apply(merge(Config(), layers), user_set)


def merge(base: Config, layers: list[tuple[str, dict[str, Any]]]) -> Config:
    """Apply layers of {dotted key: raw value} on top of `base`, coercing every value."""
    sections = {s: dataclasses.asdict(getattr(base, s)) for s in SECTIONS}
    for source, flat in layers:
        for key, value in flat.items():
            section, name = _check_key(key, source)
            tp = _field_types(SECTIONS[section])[name]
            sections[section][name] = coerce(value, tp, key, source)
    return Config(**{s: SECTIONS[s](**v) for s, v in sections.items()})


def config_from_dict(d: dict[str, Any], source: str = "a saved config") -> Config:
    """Rebuild a Config from its `to_dict` form (e.g. a checkpoint or config.yaml)."""
    flat = {f"{s}.{k}": v for s, body in d.items() for k, v in body.items()}
    return merge(Config(), [(source, flat)])


def to_dict(cfg: Config) -> dict[str, Any]:
    """{section: {key: value}}: the config keys only (what config.yaml and checkpoints hold)."""
    return {s: dataclasses.asdict(getattr(cfg, s)) for s in SECTIONS}


class _Dumper(yaml.SafeDumper):
    """Block-style sections, flow-style lists: `hidden: [512, 256]`."""


_Dumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def dump_yaml(cfg: Config) -> str:
    """The config as a recipe; a leading comment names the method defaults it holds."""
    text = yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    if cfg.method_defaults:
        text = (f"# method defaults ({cfg.method.name}) for keys the recipe and command line "
                f"left unset: {method_defaults.describe(cfg.method_defaults)}\n{text}")
    return text


def merge_overrides(cfg: Config, overrides: list[str] | tuple = (),
                    source: str = "the command line") -> Config:
    """`cfg` with `key=value` overrides applied (type-checked like build_config's)."""
    if not overrides:
        return cfg
    return merge(cfg, [(source, dict(parse_override(o) for o in overrides))])

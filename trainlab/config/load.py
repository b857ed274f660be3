"""Load, merge, type-check and dump configs: defaults <- recipe YAML <- `key=value` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

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


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML into {dotted key: raw value}."""
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
    flat: dict[str, Any] = {}
    for section, body in data.items():
        if section not in SECTIONS:
            near = _closest(str(section), all_keys() if not isinstance(body, dict)
                            else list(SECTIONS))
            raise ConfigError(
                f"Recipe '{path}' has an unknown top-level section '{section}'.{near} A recipe "
                f"maps sections ({', '.join(SECTIONS)}) to their keys, e.g. 'optim: {{lr: 0.1}}'."
            )
        if not isinstance(body, dict):
            raise ConfigError(
                f"In recipe '{path}', '{section}' must be a section mapping keys to values "
                f"(got {body!r}), e.g. '{section}: {{key: value}}' or one 'key: value' per "
                f"indented line below '{section}:'."
            )
        for name, value in body.items():
            flat[f"{section}.{name}"] = value
    return flat


def build_config(recipe: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """defaults <- recipe <- overrides, type-checked (values are validated by `validate`)."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if recipe is not None:
        layers.append((f"recipe {recipe}", read_recipe(recipe)))
    layers.append(("the command line", dict(parse_override(o) for o in overrides)))
    return merge(Config(), layers)


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
    return dataclasses.asdict(cfg)


class _Dumper(yaml.SafeDumper):
    """Block-style sections, flow-style lists: `hidden: [512, 256]`."""


_Dumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def dump_yaml(cfg: Config) -> str:
    return yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def merge_overrides(cfg: Config, overrides: list[str] | tuple = (),
                    source: str = "the command line") -> Config:
    """`cfg` with `key=value` overrides applied (type-checked like build_config's)."""
    if not overrides:
        return cfg
    return merge(cfg, [(source, dict(parse_override(o) for o in overrides))])

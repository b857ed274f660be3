"""Placeholder: replaced by the config-validation branch (check_config)."""

from __future__ import annotations

from trainlab.config.schema import Config
from trainlab.config.validate import validate


def check_config(cfg: Config) -> None:
    validate(cfg)

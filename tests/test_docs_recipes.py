"""Docs and recipes stay in sync with the code."""

from pathlib import Path

import pytest
from conftest import ROOT

from trainlab.config.load import all_keys, build_config
from trainlab.engine.checks import check_config

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("key", all_keys())
def test_readme_documents_every_config_key(key):
    section, name = key.split(".")
    assert f"`{key}`" in README or f"`{section}.{name}`," in README or f", `{key}`" in README, key


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_recipes_load_and_validate(recipe: Path):
    check_config(build_config(recipe))


def test_readme_names_the_two_commands():
    assert "make run" in README and "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()

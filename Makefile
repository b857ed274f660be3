# The README's two commands: `make run` (set up + train on the embedded default data) and
# `make test` (set up with test extras + Debian packages the tests need + run the suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test lint deb-packages clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test,export]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/trainlab train

deb-packages:
	bash scripts/install-debian-packages.sh

# pytest's exit code 5 (no tests collected) must fail, not pass silently.
test: $(VENV)/.installed-test deb-packages
	$(PY) -m ruff check trainlab tests benchmarks
	$(PY) -m pytest -q -ra --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

lint: $(VENV)/.installed-test
	$(PY) -m ruff check trainlab tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache

# The two commands of the README: `make serve` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHELL  := /bin/bash

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve test lint install install-test weights browser bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

weights: install
	$(BIN)/backdrop fetch-weights

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

serve: weights
	$(BIN)/backdrop serve

# Style, types and the one-way import order of the layers (pyproject.toml holds their settings).
lint: install-test
	$(BIN)/ruff check server models tests
	$(BIN)/ruff format --check server models tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install-test weights browser lint
	$(BIN)/python -m pytest

bench: weights
	$(BIN)/backdrop bench --output bench.json

clean:
	rm -rf $(VENV) *.egg-info

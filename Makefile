# The two commands of the README: `make serve` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHELL  := /bin/bash

.PHONY: serve test install install-test weights bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

weights: install
	$(BIN)/backdrop fetch-weights

serve: weights
	$(BIN)/backdrop serve

test: install-test weights
	$(BIN)/python -m pytest

bench: weights
	$(BIN)/backdrop bench --output bench.json

clean:
	rm -rf $(VENV) *.egg-info

# The two commands of the README: `make serve` and `make test`. Everything they need is installed here.
# `make test-fast` is the loop of seconds while working: the unit layer only, nothing installed but Python's.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHELL  := /bin/bash

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve test test-fast lint install install-test weights browser gstreamer proxy turn bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

# The test extras, installed again only when pyproject.toml changes (a no-op pip run still takes seconds).
install-test: $(VENV)/.test-installed

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

weights: install
	$(BIN)/backdrop fetch-weights

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# Debian's GStreamer, driven from the system Python (PyGObject): a third-party WebRTC stack for the WHIP tests.
gstreamer:
	@/usr/bin/python3 -c "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0'); from gi.repository import Gst; Gst.init(None); assert all(Gst.ElementFactory.find(e) for e in ('webrtcbin', 'nicesrc', 'vp8enc', 'pngdec'))" 2>/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-bad-1.0; }

# Debian's HAProxy: the proxy in front of `backdrop serve --processes N` (`backdrop proxy-config`).
proxy:
	@command -v haproxy >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq haproxy; }

# Debian's coturn: the TURN relay the Kubernetes manifests ship, for the relay-only session test.
turn:
	@command -v turnserver >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq coturn; }

serve: weights
	$(BIN)/backdrop serve

# Style, types and the one-way import order of the layers (pyproject.toml holds their settings).
lint: install-test
	$(BIN)/ruff check server models tests
	$(BIN)/ruff format --check server models tests
	$(BIN)/mypy
	$(BIN)/lint-imports

# Everything, as CI runs it: every layer (unit, e2e, browser, gstreamer, proxy, turn, training; cuda where there is one).
test: install-test weights browser gstreamer proxy turn lint
	$(BIN)/python -m pytest

# The unit layer: no real peers, no Chromium, GStreamer or HAProxy, no training runs, no lint; the weights are
# fetched by the tests that load a model. Under 90 s on two cores.
test-fast: install-test
	@echo "unit tests only; one layer: $(BIN)/python -m pytest -m e2e (or browser, gstreamer, proxy, turn, training)," \
		"one file: $(BIN)/python -m pytest tests/test_region.py, one test: ... -k NAME"
	$(BIN)/python -m pytest -m unit -q

bench: weights
	$(BIN)/backdrop bench --output bench.json

clean:
	rm -rf $(VENV) *.egg-info

# Two commands do all set-up on a fresh machine:
#   make serve   install into .venv, build the default pack if missing, serve on 127.0.0.1:$(PORT)
#   make test    install everything (Python packages, promtool) and run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-12)

.PHONY: install serve test test-fast lint lock audit bento monitoring bench loadtest demo clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements.lock
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

serve: install
	$(BIN)/python -m service.cli serve --port $(PORT)

# Prometheus' promtool (Debian package) is needed by the alert-rule tests.
test-deps:
	bash monitoring/install_prometheus.sh

test: install test-deps
	$(BIN)/python -m pytest

# Unit tests only (no servers): quick feedback while editing.
test-fast: install
	$(BIN)/python -m pytest -m "not integration"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

# Re-resolve requirements.in into the pinned lock file.
lock:
	$(BIN)/uv pip compile requirements.in --python-version 3.11 -o requirements.lock

# Known-vulnerability audit of the locked dependencies (needs the advisory service).
audit: install
	$(BIN)/pip-audit --strict --no-deps --disable-pip -r requirements.lock

bento: install
	$(BIN)/python -m service.cli bento

clean:
	rm -rf $(VENV) data

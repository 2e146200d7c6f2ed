# Two commands do all set-up on a fresh machine:
#   make serve   install into .venv, build the default pack if missing, serve on 127.0.0.1:$(PORT)
#   make test    install everything (Python packages, promtool) and run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
PROMETHEUS_PORT ?= 9090
UI_PORT ?= 8000
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed-$(shell cat requirements-bootstrap.txt requirements.lock pyproject.toml | sha256sum | cut -c1-12)

.PHONY: install serve test test-deps test-fast lint lock audit bento monitoring bench loadtest demo clean

$(STAMP): requirements-bootstrap.txt requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements-bootstrap.txt
	$(BIN)/uv pip sync -q --require-hashes --python $(BIN)/python requirements.lock
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

serve: install
	$(BIN)/python -m service.cli serve --port $(PORT)

# Prometheus' promtool (Debian package) is needed by the alert-rule tests, and
# Debian's Chromium by the admin-page browser tests (Playwright drives it).
test-deps:
	bash monitoring/install_prometheus.sh
	sh tests/install_browser.sh

test: install test-deps
	$(BIN)/python -m pytest

# Unit tests only (no servers): quick feedback while editing.
test-fast: install
	$(BIN)/python -m pytest -m "not integration"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

# Re-resolve requirements.in into the pinned lock file, with every file's hash.
lock:
	$(BIN)/uv pip compile -q requirements.in --python-version 3.11 --generate-hashes -o requirements.lock
	echo 'uv==$(UV_VERSION)' | $(BIN)/uv pip compile -q - --python-version 3.11 --generate-hashes --no-header -o requirements-bootstrap.txt

# Known-vulnerability audit of the locked dependencies (needs the advisory service;
# without it: one line and exit 3, nothing audited).
audit: install
	$(BIN)/python -m common.audit $(BIN)/pip-audit --strict --no-deps --disable-pip -r requirements.lock

# Prometheus on $(PROMETHEUS_PORT) (scraping 127.0.0.1:$(PORT), with the alert rules)
# and Evidently's UI on $(UI_PORT).
monitoring: install test-deps
	$(BIN)/python -m monitoring.cli up --target 127.0.0.1:$(PORT) --workspace data/evidently --data data/prometheus --prometheus-port $(PROMETHEUS_PORT) --ui-port $(UI_PORT)

# The flywheel end to end: drift -> retraining request -> report -> retrain -> gate -> promote.
demo: install
	$(BIN)/python -m service.cli demo --port $(PORT) --ui-port $(UI_PORT)

# Full service vs bare BentoML vs raw onnxruntime, in one run (writes loadtests/RESULTS.md).
bench: install
	bash loadtests/install_tools.sh
	$(BIN)/python -m loadtests.benchmark

# A headless locust run against a service on 127.0.0.1:$(PORT).
loadtest: install
	$(BIN)/locust -f loadtests/locustfile.py --headless -u 32 -r 8 -t 60s --host http://127.0.0.1:$(PORT) --csv loadtests/results/locust --html loadtests/results/locust.html

# Package the service as a bento (offline, no Docker) carrying the default pack,
# copied first into the model store under data/bentoml.
bento: install
	$(BIN)/python -m service.cli store-pack
	BENTOML_HOME=$(CURDIR)/data/bentoml BENTOML_DO_NOT_TRACK=true $(BIN)/bentoml build -f bentofile.yaml

clean:
	rm -rf $(VENV) data

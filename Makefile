# Two entry points, both self-contained on a fresh machine with python3 (3.11+):
#   make run   - install into .venv and serve on config.example.toml (127.0.0.1:8787 only)
#   make test  - install with test tools, then lint, type-check and run every test
#   make bench - install nginx-light and wrk (apt) and the bench extra, then run the
#                benchmark suite, which writes docs/benchmarks.md (BENCH_ARGS=--quick)
VENV ?= .venv
# `make run` listens on this machine only; HOST=0.0.0.0 SERVE_ARGS=--allow-open opens it
# (serve refuses a non-loopback address while the config has no gateway keys).
HOST ?= 127.0.0.1
SERVE_ARGS ?=
PYTHON ?= python3
BIN := $(VENV)/bin
PLUGINS := $(wildcard plugins/*/pyproject.toml)
EDITABLE := -e . $(foreach p,$(PLUGINS),-e $(dir $(p)))
# Each plugin may declare a `test` extra (moto for bedrock, fake-gcs-server for vertex).
EDITABLE_TEST := -e '.[test]' $(foreach p,$(PLUGINS),-e '$(dir $(p))[test]')

.PHONY: run test lint install install-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml $(PLUGINS)
	$(BIN)/python -m pip install -q $(EDITABLE)
	touch $@

# The dashboard's browser tests drive Debian's chromium through Playwright (no download).
$(VENV)/.installed-test: $(VENV)/.installed
	command -v chromium >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	$(BIN)/python -m pip install -q $(EDITABLE_TEST)
	touch $@

# The suite's load generator and near-free upstream come from Debian's packages; its
# peer, Portkey's open-source gateway (pinned in bench/portkey-peer), from npm. Without
# the peer the suite still runs, and says so in docs/benchmarks.md.
$(VENV)/.installed-bench: $(VENV)/.installed-test bench/portkey-peer/package-lock.json
	command -v nginx >/dev/null && command -v wrk >/dev/null && command -v npm >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light wrk nodejs npm)
	$(BIN)/python -m pip install -q -e '.[bench]'
	cd bench/portkey-peer && npm ci --no-audit --no-fund -q || \
		echo "note: Portkey's gateway could not be installed; the suite runs without its peer"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: $(VENV)/.installed
	$(BIN)/finetune-gateway serve --config config.example.toml --host $(HOST) $(SERVE_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check gateway plugins tests bench
	$(BIN)/ruff format --check gateway plugins tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-bench
	PATH="$$PATH:/usr/sbin" $(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info plugins/*/*.egg-info

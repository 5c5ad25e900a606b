# vudsync — the two commands a newcomer needs: `make demo` and `make test`.
# Each prepares what it needs by itself: system packages (Java, Maven, PostgreSQL,
# Prometheus), the virtual environment, and the Kafka jars from Maven Central.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export VUDSYNC_KAFKA_CACHE ?= $(HOME)/.cache/vudsync/kafka

.PHONY: demo test lint typecheck system-deps system-deps-demo kafka-jars venv clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

demo: system-deps-demo kafka-jars  ## run the whole pipeline on the embedded default and print a summary
	$(BIN)/vudsync demo

test: system-deps kafka-jars  ## lint, check the format, layers and types, run every test (unit, integration, e2e)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)  ## ruff (lint and format check) and the import layers (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)  ## mypy --strict on the packages
	$(BIN)/mypy

system-deps:  ## Java, Maven, PostgreSQL, Prometheus from Debian's packages, if missing
	@scripts/ensure-system-deps.sh

system-deps-demo:
	@scripts/ensure-system-deps.sh --demo

venv: $(STAMP)  ## the virtual environment with the project and its dev tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,rocksdb]'
	@touch $(STAMP)

kafka-jars: $(STAMP)  ## fetch the Apache Kafka jars from Maven Central (cached)
	$(BIN)/vudsync kafka fetch

clean:  ## remove local state (broker data, stores, ledgers) — not the jar cache
	-$(BIN)/vudsync kafka down
	rm -rf var

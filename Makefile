# siyu — the two commands a newcomer needs are `make demo` and `make test`.
# Everything they need is installed here, by these targets, on a fresh machine.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STACK := deploy/local/stack.sh
STAMP := $(VENV)/.siyu-installed

.DEFAULT_GOAL := help
.PHONY: help install system up down status reset migrate schemas demo test test-unit \
        test-integration lint format bench profile clean compose-up compose-down

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "siyu needs Python 3.11+ (set PYTHON=...)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,rocksdb]'
	@touch $(STAMP)

install: $(STAMP) ## Create the virtualenv and install siyu with its dev tools

system: ## Install Kafka jars (Maven) and ClickHouse/Prometheus (apt) when missing
	$(STACK) install

up: install ## Start Kafka and ClickHouse on 127.0.0.1 (installs them when missing)
	$(STACK) up

down: ## Stop exactly what `make up` started
	$(STACK) down

status: ## Say what runs
	$(STACK) status

reset: ## Stop the stack and delete its data (keeps downloads)
	$(STACK) reset

migrate: up ## Create or upgrade the ClickHouse schema
	$(VENV)/bin/siyu migrate

schemas: install ## Regenerate schemas/ (JSON Schemas, the collector's OpenAPI) from the models
	$(VENV)/bin/siyu schemas
	$(VENV)/bin/siyu openapi

demo: migrate ## Set up, start the stack, run the pipeline on generated events, print results
	$(VENV)/bin/siyu demo

test: install system lint ## Set up, lint, and run the whole suite (starts and stops what it needs)
	$(PY) -m pytest -q -ra

test-unit: install ## Unit tests only (no servers)
	$(PY) -m pytest -q tests/unit

test-integration: install system ## Integration tests only (real Kafka and ClickHouse)
	$(PY) -m pytest -q -ra tests/integration

lint: install ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check pipeline tests
	$(VENV)/bin/ruff format --check pipeline tests
	$(VENV)/bin/mypy

format: install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix pipeline tests
	$(VENV)/bin/ruff format pipeline tests

clean: down ## Remove the virtualenv and local state (not the Maven cache)
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache

bench: migrate ## Issue 8's benchmark: one worker vs the ceiling, latency, state size (BENCH_ARGS=--help)
	$(PY) -m tests.bench $(BENCH_ARGS)

profile: migrate ## Where one worker's time goes: py-spy on a backlog or live traffic (BENCH_ARGS=--help)
	$(PY) -m tests.bench.profile $(BENCH_ARGS)

COMPOSE := docker compose -f deploy/compose/compose.yaml

compose-up: ## Build the image and start the compose stack (needs Docker; docs/deploy.md)
	$(COMPOSE) up -d --build --wait

compose-down: ## Stop the compose stack (its volumes are kept)
	$(COMPOSE) down

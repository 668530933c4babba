# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MCP_SERVERS := .mcp-servers

.PHONY: run test lint typecheck unit js-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/haldir migrate up
	$(BIN)/haldir serve

lint: $(STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy src

# Real MCP servers the tests run against, pinned by tests/servers/package-lock.json.
$(MCP_SERVERS)/.installed: tests/servers/package.json tests/servers/package-lock.json
	mkdir -p $(MCP_SERVERS)
	cp tests/servers/package.json tests/servers/package-lock.json $(MCP_SERVERS)/
	npm ci --prefix $(MCP_SERVERS) --ignore-scripts --no-audit --no-fund
	touch $@

# The browser the dashboard's tests drive: Debian's Chromium (Playwright downloads no browser here).
CHROMIUM := $(VENV)/.chromium
$(CHROMIUM): | $(BIN)/python
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	touch $@

unit: $(STAMP) $(MCP_SERVERS)/.installed $(CHROMIUM)
	$(BIN)/pytest -q

# The TypeScript package @haldir/ai-sdk (js/), pinned by js/package-lock.json. Its tests start their own
# `haldir serve` from this venv: the published build compiles (strict), then Node's test runner.
JS := js
$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	npm ci --prefix $(JS) --ignore-scripts --no-audit --no-fund
	touch $@

js-test: $(STAMP) $(JS)/node_modules/.installed
	npm --prefix $(JS) test

test: lint typecheck unit js-test

bench: $(STAMP)
	$(BIN)/python bench/sessions.py

clean:
	rm -rf $(VENV) $(MCP_SERVERS) .pytest_cache .mypy_cache .ruff_cache $(JS)/node_modules $(JS)/dist $(JS)/build

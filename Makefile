# Two commands for a fresh machine: `make run` and `make test`.
# Two distributions share src/haldir: haldir-client (clients/python, the SDK) and haldir (the server).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MCP_SERVERS := .mcp-servers
CLIENTS_VENV := .venv-clients
CLIENT := clients/python

.PHONY: run test lint typecheck unit js-test bench dist clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Both distributions, editable: haldir-client (clients/python) and haldir, which depends on it.
$(STAMP): pyproject.toml $(CLIENT)/pyproject.toml $(CLIENT)/hatch_build.py | $(BIN)/python
	$(BIN)/pip install --quiet -e ./$(CLIENT) -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/haldir migrate up
	$(BIN)/haldir serve

lint: $(STAMP)
	$(BIN)/ruff format --check src tests bench $(CLIENT)
	$(BIN)/ruff check src tests bench $(CLIENT)

typecheck: $(STAMP)
	$(BIN)/mypy src
	$(BIN)/mypy $(CLIENT)/hatch_build.py

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

# An agent application's venv: haldir-client (editable) with CrewAI, which pins mcp<2 and openai<3 and so
# cannot share .venv with the server. tests/dist install the client wheel beside it; integration tests reuse it.
$(CLIENTS_VENV)/.installed: $(CLIENT)/pyproject.toml $(CLIENT)/hatch_build.py
	test -x $(CLIENTS_VENV)/bin/python || $(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/pip install --quiet --upgrade pip
	$(CLIENTS_VENV)/bin/pip install --quiet -e './$(CLIENT)[crewai]'
	touch $@

unit: $(STAMP) $(MCP_SERVERS)/.installed $(CHROMIUM) $(CLIENTS_VENV)/.installed
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

# The wheels and sdists of haldir-client and haldir, in dist/.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist $(CLIENT)
	$(BIN)/python -m build --no-isolation --outdir dist .

clean:
	rm -rf $(VENV) $(CLIENTS_VENV) $(MCP_SERVERS) dist .pytest_cache .mypy_cache .ruff_cache $(JS)/node_modules $(JS)/dist $(JS)/build

# Gatehouse: `make run` for the demo on the embedded default, `make test` for the suite.
PYTHON ?= python3
VENV ?= .venv
export VENV
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# The suite runs on two pytest-xdist workers, each with its own test database and Redis database (tests/xdist_services.py).
TEST_WORKERS ?= 2

# These targets are for development (the demo, the suite, lint): production is Gatehouse's default otherwise.
export GATEHOUSE_ENV ?= development
# The demo's ports, for `make run` only. The settings read them too: seed_demo points the sample systems at the CRMs'
# ports, and Gatehouse's links (GATEHOUSE_BASE_URL) at the web port.
run: export GATEHOUSE_WEB_PORT ?= 8000
run: export GATEHOUSE_CRM_PORT ?= 8100
run: export GATEHOUSE_CRM_STAGING_PORT ?= 8101
# Where `make run` serves, for `make demo-agent` (sandbox/demo_agent.py reads it): the token that target issues comes
# from this checkout's database, so this checkout's demo is the one to call, on whatever ports it was started.
DEMO_RECORD = $${GATEHOUSE_VAR_DIR:-var}/demo-run.json

.PHONY: install run test lint format demo-token demo-agent clean

MCP_SERVERS := sandbox/mcp_servers

$(STAMP): pyproject.toml $(MCP_SERVERS)/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@# The official MCP reference servers from npm that the suite runs as downstream systems (needs Node.js), and the
	@# MCP Inspector's CLI with the Node.js 22 it needs, for the README's MCP examples (sandbox/mcp_servers/package.json).
	@if command -v npm >/dev/null; then npm ci --silent --no-audit --no-fund --prefix $(MCP_SERVERS); \
	else echo "npm not found: tests against the npm MCP servers will be skipped"; fi
	touch $(STAMP)

install: $(STAMP)

# The banner (admin URL, who signs in for what, a token) comes last, from the Procfile's `demo` process.
run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput -v 0
	$(BIN)/python manage.py collectstatic --noinput -v 0
	$(BIN)/python manage.py seed_demo --quiet
	$(BIN)/python manage.py check --database default
	@printf '{"web_url": "http://127.0.0.1:%s"}\n' "$(GATEHOUSE_WEB_PORT)" > "$(DEMO_RECORD)"
	$(BIN)/honcho --procfile Procfile start

test: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The demo agent's story (sandbox/demo_agent.py) against a running `make run`, on a token of its own, never printed.
# It calls GATEHOUSE_WEB_PORT when set, else where `make run` recorded it serves (DEMO_RECORD), else port 8000.
demo-agent: $(STAMP)
	@$(BIN)/python manage.py issue_token collections-agent --expires-days 1 --label "make demo-agent" \
		| $(BIN)/python -m sandbox.demo_agent --token-stdin --wait-for-web 10

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var/

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
export GATEHOUSE_WEB_PORT ?= 8000
export GATEHOUSE_CRM_PORT ?= 8100
export GATEHOUSE_CRM_STAGING_PORT ?= 8101
# Links in the demo's e-mails point at the port the demo serves on.
run demo-agent: export GATEHOUSE_BASE_URL ?= http://127.0.0.1:$(GATEHOUSE_WEB_PORT)

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

run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput -v 0
	$(BIN)/python manage.py collectstatic --noinput -v 0
	$(BIN)/python manage.py seed_demo --quiet \
		--crm-url http://127.0.0.1:$(GATEHOUSE_CRM_PORT) --crm-staging-url http://127.0.0.1:$(GATEHOUSE_CRM_STAGING_PORT)
	$(BIN)/python manage.py check --database default
	@$(BIN)/python manage.py demo_banner --web-url http://127.0.0.1:$(GATEHOUSE_WEB_PORT)
	$(BIN)/honcho --procfile Procfile start

test: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The demo agent's story (sandbox/demo_agent.py) against a running `make run`, on a token of its own, never printed.
demo-agent: $(STAMP)
	@$(BIN)/python manage.py issue_token collections-agent --expires-days 1 --label "make demo-agent" \
		| $(BIN)/python -m sandbox.demo_agent --token-stdin --base-url http://127.0.0.1:$(GATEHOUSE_WEB_PORT) --wait-for-web 10

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

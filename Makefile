# One obvious command per job; the README mirrors these.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Tests and benchmarks run in production mode against the machine's PostgreSQL and Redis.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/agentdesk
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	AGENTDESK_SECRET_KEY=test-only-not-secret AGENTDESK_LOG_LEVEL=WARNING

.PHONY: help demo test lint format bench lock services chromium clean

help:
	@echo "make demo    run the whole product locally (SQLite, no servers needed)"
	@echo "make test    run the test suite against local PostgreSQL and Redis"
	@echo "make lint    ruff and mypy"
	@echo "make bench   run the benchmarks"
	@echo "make lock    recompile the pinned requirements"

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

# The demo runs as production does, DEBUG off: the friendly error pages, static files
# collected and served by WhiteNoise, no query log growing in the worker. Its key is for a
# demo on this machine's loopback only. It registers a second agent, support-unattended,
# whose runs are dead-lettered when no model answers (README).
DEMO_ENV := AGENTDESK_SECRET_KEY=demo-only-not-secret-do-not-deploy \
	AGENTDESK_AGENTS=examples.support.agent.support_agent,examples.support.agent.support_unattended_agent

demo: $(STAMP)
	$(DEMO_ENV) $(BIN)/python manage.py migrate --no-input
	$(DEMO_ENV) $(BIN)/python manage.py collectstatic --no-input --verbosity 0
	$(DEMO_ENV) $(BIN)/python manage.py seed_demo
	$(DEMO_ENV) $(BIN)/python manage.py demo

services:
	.ci/services

chromium:
	.ci/chromium

test: $(STAMP) services chromium
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	AGENTDESK_DEBUG=true $(BIN)/mypy agentdesk agents audit policy releases runs reviews evals calibration examples

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) services
	$(TEST_ENV) $(BIN)/python bench/run.py

lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile --quiet --no-header requirements.in -o requirements.txt
	$(BIN)/uv pip compile --quiet --no-header requirements-dev.in -o requirements-dev.txt

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache

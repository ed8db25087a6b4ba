# Berrys Portal. The two commands: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8090
PYTEST_ARGS ?=
SIMULATORS_BASE_PORT ?= 8101

.PHONY: demo demo-run demo-status test install install-test services browser lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The client package (clients/python, its own distribution) goes into the same venv: the
# simulators register and call through it, as a real Berrys service would.
CLIENT := ./clients/python
$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e $(CLIENT) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e $(CLIENT) -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

services:
	bash scripts/ensure_services.sh

# Debian's Chromium for the browser tests (installed only if missing; never fails).
browser:
	bash scripts/ensure_chromium.sh

demo: install demo-run

# The stack without the install step (the smoke test reuses an existing venv).
# Embedded defaults (SQLite + filesystem broker under var/) unless DATABASE_URL /
# CELERY_BROKER_URL / REDIS_URL say otherwise. Ctrl-C stops every process (exit 0).
demo-run:
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py metrics_reset
	$(BIN)/python manage.py demo_setup --api-key-file var/demo/api.key
	$(BIN)/python manage.py setup_periodic_tasks
	@echo "Starting the demo: admin at http://127.0.0.1:$(PORT)/admin/ once it is up; the banner with the login and what to click follows."
	@BIN=$(BIN) PORTAL_PORT=$(PORT) SIMULATORS_BASE_PORT=$(SIMULATORS_BASE_PORT) $(BIN)/python -m simulators.demo_stack -f Procfile

# The running demo's banner (URLs, login, sample runs, what to click) and its services' health.
demo-status:
	@$(BIN)/python -m simulators.demo_status --portal http://127.0.0.1:$(PORT) --api-key-file var/demo/api.key --banner-file var/demo/banner.txt

# Two passes: the whole suite on PostgreSQL + Redis (DATABASE_URL / REDIS_URL, defaults in
# berrys_portal/settings_test.py), then the tests marked both_dbs on the embedded default
# (SQLite + filesystem broker + database-held breakers, under var/test-sqlite). Fails if either fails.
# First the import contracts (pyproject's [tool.importlinter]: layers point one way): a broken
# contract fails `make test` before any test runs.
SQLITE_TEST_DIR := $(CURDIR)/var/test-sqlite
test: install-test services browser
	$(BIN)/lint-imports --no-cache
	@status=0; \
	$(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	echo "== the embedded-default pass: SQLite + filesystem broker (tests marked both_dbs) =="; \
	rm -rf $(SQLITE_TEST_DIR); \
	DATABASE_URL=sqlite:///$(SQLITE_TEST_DIR)/portal.sqlite3 REDIS_URL= CELERY_BROKER_URL= BREAKER_STORE= \
	  PORTAL_VAR_DIR=$(SQLITE_TEST_DIR) $(BIN)/python -m pytest -m both_dbs $(PYTEST_ARGS) || status=$$?; \
	exit $$status

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf var .pytest_cache

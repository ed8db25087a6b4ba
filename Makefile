# Berrys Portal. The two commands: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8090
PYTEST_ARGS ?=

.PHONY: demo test install install-test services browser lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

services:
	bash scripts/ensure_services.sh

# Debian's Chromium for the browser tests (installed only if missing; never fails).
browser:
	bash scripts/ensure_chromium.sh

demo: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py metrics_reset
	$(BIN)/python manage.py demo_setup
	$(BIN)/python manage.py setup_periodic_tasks
	$(BIN)/python manage.py runserver 0.0.0.0:$(PORT) --noreload

test: install-test services browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check .

clean:
	rm -rf var .pytest_cache

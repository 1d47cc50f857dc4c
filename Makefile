# tickvault: `make run` and `make test` set everything up on a machine with Python 3.11+.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Migrates the database at TICKVAULT_DATABASE_URL (default: ./tickvault.db) to head.
run: setup
	$(BIN)/tickvault db upgrade
	$(BIN)/tickvault db current

# PostgreSQL tests run when TICKVAULT_TEST_POSTGRES_URL is set (see README).
test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

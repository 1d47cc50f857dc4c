# tickvault: `make run` and `make test` set everything up on a machine with Python 3.11+.
# `make run PORT=8080 RATE=200` changes the port and the simulated feed's ticks per second.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench bench-tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

HOST ?= 127.0.0.1
PORT ?= 8000
RATE ?= 50

# The live service on the database at TICKVAULT_DATABASE_URL (default: ./tickvault.db):
# migrate it, seed the demo instruments and rules (once), serve the API with a simulated feed.
run: setup
	$(BIN)/tickvault db upgrade
	$(BIN)/tickvault seed
	exec $(BIN)/tickvault serve --simulate --host $(HOST) --port $(PORT) --rate $(RATE)

# PostgreSQL tests run when TICKVAULT_TEST_POSTGRES_URL is set (see README).
test: setup
	$(BIN)/pytest

# The original performance claims, measured (docs/benchmarks.md). PostgreSQL too when
# TICKVAULT_BENCH_POSTGRES_URL names a server where the user may create databases.
bench: setup
	$(BIN)/tickvault bench --output bench-results

# wrk, the HTTP load generator of `tickvault bench` and benchmarks/exactly_once.py (without it
# their HTTP cases are skipped and say so): Debian's package, installed as root.
bench-tools:
	command -v wrk >/dev/null || apt-get install -y wrk

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

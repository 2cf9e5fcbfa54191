# bouncegw: `make run` starts a gateway on embedded defaults, `make test` runs the whole suite.
# Both create .venv and install pinned dependencies on first use: `make run` only what the
# gateway needs (with pip's progress), `make test` the development tools too.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.installed-runtime

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@# Python 3.13+ rebuilds flanker's parser tables on first import (README: Python versions): once, here.
	$(BIN)/python -c 'import logging; logging.disable(logging.WARNING); import flanker.addresslib.address'
	touch $@

$(RUNTIME_STAMP): pyproject.toml constraints.txt
	@echo "Installing bouncegw's runtime dependencies into $(VENV) (a minute or two the first time)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check --progress-bar on -c constraints.txt -e .
	$(BIN)/python -c 'import logging; logging.disable(logging.WARNING); import flanker.addresslib.address'
	touch $@

# Listener 127.0.0.1:10025, admin HTTP 127.0.0.1:8025, SQLite in var/, delivered mail in var/outbox/new/.
# One worker for a local trial; in production `--workers` defaults to the number of CPUs.
run: $(RUNTIME_STAMP)
	mkdir -p var
	$(BIN)/bouncegw serve --workers 1 --next-hop maildir:var/outbox --database sqlite:///var/bouncegw.sqlite3 --log-format text

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check gateway storage tests
	$(BIN)/ruff format --check gateway storage tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache

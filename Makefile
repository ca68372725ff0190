# One command each for a newcomer on a fresh machine:
#   make test   create .venv, install iracdb with its test and docs extras, lint, run the whole suite (SQLite and PostgreSQL)
#   make demo   create .venv, install iracdb, run the demo (synthesise, ingest, reduce, export, plot) in ./demo/
#   make docs   build the documentation into docs/_build/html (any Sphinx warning fails the build)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The PostgreSQL server the tests use; each test run creates its own databases there and drops them afterwards.
IRACDB_TEST_PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres
export IRACDB_TEST_PG_URL

.PHONY: test demo lint typecheck install clean bench docs

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,docs]'
	touch $@

install: $(BIN)/.installed

# ruff (style, import direction, complexity) and mypy on the package (settings in pyproject.toml).
lint: install
	$(BIN)/ruff check iracdb migrations tests scripts docs
	$(BIN)/mypy

typecheck: install
	$(BIN)/mypy

# IRACDB_REQUIRE_PG=1: a PostgreSQL test that cannot reach its server fails instead of skipping.
test: lint
	IRACDB_REQUIRE_PG=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

demo: install
	$(BIN)/iracdb demo demo

# -W --keep-going: every warning is reported and fails the build; -n: every cross-reference must resolve. Nothing is
# downloaded (no intersphinx). The command reference, schema, columns and flags are generated from the code.
docs: install
	rm -rf docs/_build
	$(BIN)/sphinx-build -W --keep-going -n -q -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

bench: install
	$(BIN)/python scripts/bench_ingest.py
	$(BIN)/python scripts/bench_photometry.py
	$(BIN)/python scripts/bench_frames.py
	$(BIN)/python scripts/bench_reduce.py
	$(BIN)/python scripts/bench_export.py
	$(BIN)/python scripts/bench_overlap.py

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache .mypy_cache docs/_build

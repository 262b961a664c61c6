# One entry point for everything: `make demo` and `make test` work on a fresh machine.
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test lint format proto models bench up clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) -m lidroute.cli demo

up: setup
	@$(PY) -m lidroute.cli up

test: setup
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check -q . && $(PY) -m pytest

lint: setup
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	@$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

proto: setup
	@$(PY) scripts/gen_proto.py

models: setup
	@$(PY) -m lidroute.cli models build --out models

bench: setup
	@$(PY) -m lidroute.bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

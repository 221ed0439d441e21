# crisisctl — the only set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export CRISISCTL_TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
export CRISISCTL_TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: demo test lint typecheck unit bench services clean

$(BIN)/.installed-base: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(BIN)/.installed-test: pyproject.toml $(BIN)/.installed-base
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(BIN)/.installed-bench: pyproject.toml $(BIN)/.installed-test
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

demo: $(BIN)/.installed-base
	$(BIN)/crisisctl demo

services:
	bash scripts/ensure-services.sh

lint: $(BIN)/.installed-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(BIN)/.installed-test
	$(BIN)/mypy src

unit: $(BIN)/.installed-test
	$(BIN)/pytest -q tests/unit

test: $(BIN)/.installed-test services lint typecheck
	$(BIN)/pytest -q

bench: $(BIN)/.installed-bench
	bash scripts/ensure-system-packages.sh wrk
	$(BIN)/python benchmarks/guard_overhead.py
	$(BIN)/python benchmarks/guard_instructions.py
	$(BIN)/python benchmarks/overload_goodput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

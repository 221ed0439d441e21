# crisisctl — the only set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export CRISISCTL_TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
export CRISISCTL_TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
export CRISISCTL_TEST_REDIS_CLUSTER_URL ?= redis+cluster://127.0.0.1:7301

.PHONY: demo test lint typecheck unit bench services clean accel vendor
# the per-request paths (guard, load engine), compiled in place by hatch_build.py (pure Python if not);
# their list is src/crisisctl/_accelerated.py's, printed by the build script (stdlib only)
ACCEL_SRC := $(shell $(PYTHON) hatch_build.py --list) src/crisisctl/_accelerated.py

$(BIN)/.installed-base: pyproject.toml hatch_build.py
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

# recompile the request path after its sources changed (the editable install compiles it first)
$(BIN)/.accel: $(ACCEL_SRC) hatch_build.py $(BIN)/.installed-base
	$(BIN)/python hatch_build.py || true
	touch $@

accel: $(BIN)/.accel

# the console's chart library, from the npm registry at build time (never a CDN at run time)
VENDOR := src/crisisctl/server/static/vendor/.lock-sha256
$(VENDOR): frontend/package-lock.json scripts/vendor-frontend.sh
	bash scripts/vendor-frontend.sh

vendor: $(VENDOR)

demo: $(BIN)/.installed-base $(BIN)/.accel $(VENDOR)
	$(BIN)/crisisctl demo

services:
	bash scripts/ensure-services.sh
	bash scripts/ensure-redis-cluster.sh
	bash scripts/ensure-system-packages.sh nginx prometheus prometheus-alertmanager chromium

lint: $(BIN)/.installed-test
	$(BIN)/ruff check src tests benchmarks hatch_build.py
	$(BIN)/ruff format --check src tests benchmarks hatch_build.py

typecheck: $(BIN)/.installed-test
	$(BIN)/mypy src

unit: $(BIN)/.installed-test $(BIN)/.accel $(VENDOR)
	$(BIN)/pytest -q tests/unit

# the whole suite on the compiled request path, then the unit tests on its pure-Python source;
# the unit tests (no servers, ports or shared state) run on every core (pytest-xdist), the
# others one at a time (they start servers and some measure time)
test: $(BIN)/.installed-test $(BIN)/.accel $(VENDOR) services lint typecheck
	$(BIN)/pytest -q --ignore=tests/unit
	$(BIN)/pytest -q -n auto tests/unit
	CRISISCTL_PURE_PYTHON=1 $(BIN)/pytest -q -n auto -p no:cacheprovider tests/unit

# the realistic app's guard once it has run for a while: every route's adaptive limit then holds
# 30 s of latency history (docs/benchmarks.md, "The steady state")
STEADY = --variants realistic_bare,realistic_guard,realistic_guard_jobs_only,realistic_floor,realistic_work10 \
	--warmup 35 --rounds 3 --output benchmarks/results/guard_overhead_steady.json

bench: $(BIN)/.installed-bench $(BIN)/.accel
	bash scripts/ensure-system-packages.sh wrk hey
	$(BIN)/python benchmarks/guard_overhead.py
	$(BIN)/python benchmarks/guard_overhead.py $(STEADY)
	$(BIN)/python benchmarks/guard_instructions.py
	$(BIN)/python benchmarks/guard_misses.py
	$(BIN)/python benchmarks/overload_goodput.py
	$(BIN)/python benchmarks/loadgen_throughput.py
	$(BIN)/python benchmarks/control_cost.py
	$(BIN)/python benchmarks/quota_cost.py
	$(BIN)/python benchmarks/watch_cost.py
	$(BIN)/python benchmarks/cache_cost.py
	$(BIN)/python benchmarks/ticker_cost.py
	$(BIN)/python benchmarks/track_memory_cost.py
	$(BIN)/python benchmarks/serve_sse.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build frontend/node_modules
	rm -rf src/crisisctl/server/static/vendor
	find src -name '*.so' -delete

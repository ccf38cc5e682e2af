# portero: `make run` brings up the demo portal behind portero; `make test` sets up and runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
COMPILED := $(VENV)/.compiled
UV_VERSION := 0.13.9
ROUTER_SOURCES := $(filter-out %/__init__.py,$(wildcard src/portero/router/*.py))

.PHONY: setup provision run test lint typecheck unit integration lock clean pure docs bench

setup: $(STAMP) $(COMPILED)

# uv installs the lock: it fetches in parallel (an empty cache took pip 77-110 s, uv 2-3 s), so a fresh machine
# gets to a serving portal well within 2 minutes. pip installs uv itself, and takes over if uv cannot be had.
$(STAMP): requirements.lock pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) || true
	if [ -x $(BIN)/uv ]; then $(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock; \
	else $(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock; fi
	PORTERO_COMPILE=0 $(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The router compiled to C by mypyc, in place; again whenever one of its sources changes (setup.py says why).
$(COMPILED): $(STAMP) $(ROUTER_SOURCES)
	PYTHON=$(BIN)/python ./scripts/compile-router.sh
	[ "$${PORTERO_COMPILE:-1}" = 0 ] || touch $(COMPILED)

# Run the router as plain Python (the same code, slower): drop the compiled modules until the next `make setup`
# (`PORTERO_COMPILE=0 make test` tests it that way).
pure:
	PORTERO_COMPILE=0 ./scripts/compile-router.sh
	rm -f $(COMPILED)

provision:
	./scripts/provision.sh

run: setup
	$(BIN)/portero up --file portero.yaml

lint: setup
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples

typecheck: setup
	$(BIN)/mypy src examples/portal/main.py

# Two workers, a test file each at a time: most integration tests wait on real processes, not on the CPU. Three
# left the cores less idle (the suite 13:04 instead of 17:02 once) but starved the timing-bound tests: a clean-clone
# CI with three failed 3 of them and took 18:30.
# The three-node test swarm (scripts/swarm-cluster.sh) is held for the run and removed after it, unless another
# run on this machine still holds it.
test: setup provision lint typecheck
	./scripts/swarm-cluster.sh up --holder $$$$; \
	status=0; $(BIN)/pytest -n 2 --dist loadfile --durations=30 || status=$$?; \
	./scripts/swarm-cluster.sh down --holder $$$$; exit $$status

unit: setup
	$(BIN)/pytest tests/unit

# Re-pin every dependency (needs network to PyPI); commit the result.
lock:
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --no-header -o requirements.lock

clean:
	rm -rf $(VENV) .portero .pytest_cache .mypy_cache .ruff_cache src/*.egg-info build
	find src -name '*.so' -delete

# Regenerate the generated parts of the docs (the spec reference).
docs: setup
	$(BIN)/python -m portero.spec.reference docs/spec.md

# wrk through portero, HAProxy and nginx (configured alike) and direct, with one worker each and with two, in three
# interleaved rounds (medians: this VM's speed drifts from run to run), idle-connection memory, a perf profile of
# the router; installs wrk, haproxy, nginx and perf if missing; then the autoscaler's reaction times and each
# deploy strategy's duration and failed requests. About 25 minutes; writes bench/results/{latest,autoscale,deploy}.md.
# Not here: bench/first_start.py, the first `make run` on a clean clone with empty caches (network-bound; docs/benchmarks.md).
bench: setup
	./bench/provision.sh
	$(BIN)/python bench/run.py --rounds 3
	$(BIN)/python bench/autoscale.py --runs 1
	$(BIN)/python bench/deploy.py --runs 1
	$(BIN)/python bench/resilience.py
	$(BIN)/python bench/tls.py --rounds 3

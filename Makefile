# Two commands on a fresh machine:  make run  (the comparison)  and  make test  (lint + tests; make test-fast: the
# edit loop).
# Both create .venv if missing and install xfbench with every framework, pinned by $(CONSTRAINTS).
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.xfbench-installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install run test test-fast test-full parity bench bench-ray gate list screenshot clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e ".[all,test]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/xfbench run --json results/latest.json --html results/report.html --md results/summary.md $(ARGS)

parity: $(STAMP)
	$(BIN)/xfbench parity --json results/parity.json $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/native_overhead.py $(ARGS)

bench-ray: $(STAMP)
	$(BIN)/python benchmarks/ray_overhead.py $(ARGS)

gate: $(STAMP)
	$(BIN)/python benchmarks/validate_gate.py $(ARGS)

screenshot: $(STAMP)
	$(BIN)/python benchmarks/screenshot.py results/latest.json --out docs/report.png

list: $(STAMP)
	$(BIN)/xfbench list

# Test tiers (tests/conftest.py marks each test by what it needs). make test runs all of them in two passes: every
# test whose assertions do not rest on measured time, two at a time (pytest-xdist: the unit tests, the fake-backend
# processes, the real frameworks, the browser, the notebook), then the gate's timing verdicts and the Ray clusters,
# one at a time.
SERIAL := cluster or serial
FAST := not (frameworks or processes or cluster or browser or notebook or venvs or serial)

test: $(STAMP)
	$(BIN)/ruff check xfbench tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --durations=30 -m "not ($(SERIAL))" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q --durations=15 -m "$(SERIAL)" $(PYTEST_ARGS)

test-fast: $(STAMP)  # the edit loop: no framework, no process (checked), well under a minute
	$(BIN)/ruff check xfbench tests benchmarks
	XFBENCH_TEST_TIER=fast $(BIN)/python -m pytest -q -n 2 -m "$(FAST)" $(PYTEST_ARGS)

test-full: $(STAMP)
	XFBENCH_TEST_FULL=1 $(BIN)/python -m pytest -q --durations=30 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache

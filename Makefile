# Spikegate: two commands on a fresh machine.
#   make run   - create .venv, install, bring up the stack on embedded defaults, run the default scenario
#   make test  - create .venv, install (with dev extras and system packages), run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SCENARIO ?= perfect-storm
PYTEST_ARGS ?=

.PHONY: help install sysdeps run test lint typecheck bench gate clean

help:
	@echo "make run      install and run the default scenario ($(SCENARIO))"
	@echo "make test     install and run the test suite"
	@echo "make lint     ruff format --check + ruff check"
	@echo "make typecheck  mypy (strict on the packages)"
	@echo "make bench    run the benchmarks in tests/bench (JSON on stdout)"

# --- system packages ---------------------------------------------------------------------
# redis-server (and redis-tools for redis-benchmark) come from the OS. Installed through
# apt-get when missing and we are root; otherwise the exact command is printed and we stop.
sysdeps:
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server and redis-tools with apt-get"; \
	    (apt-get install -y -q redis-server redis-tools >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q redis-server redis-tools >/dev/null)) || \
	     { echo "apt-get could not install redis-server"; exit 1; }; \
	  else \
	    echo "redis-server is missing. Install it, then run make again:"; \
	    echo "  Debian/Ubuntu: sudo apt-get install -y redis-server redis-tools"; \
	    echo "  macOS:         brew install redis"; \
	    exit 1; \
	  fi; \
	fi
	@# Chromium for the live page's browser tests (they skip with a message without it)
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium with apt-get (the live page's browser tests)"; \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) || \
	     echo "apt-get could not install chromium: the browser tests will be skipped"; \
	  else \
	    echo "chromium is missing: the browser tests will be skipped. To run them:"; \
	    echo "  Debian/Ubuntu: sudo apt-get install -y chromium"; \
	  fi; \
	fi

# --- the virtual environment -------------------------------------------------------------
$(BIN)/python:
	@if ! $(PYTHON) -m venv --help >/dev/null 2>&1 || ! $(PYTHON) -c 'import ensurepip' >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q python3-venv >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null)); \
	  else \
	    echo "python3 venv support is missing: sudo apt-get install -y python3-venv"; exit 1; \
	  fi; \
	fi
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

install: sysdeps $(STAMP)

# --- the two commands --------------------------------------------------------------------
run: install
	$(BIN)/spikegate run $(SCENARIO)

test: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# --- the rest ----------------------------------------------------------------------------
# The CI gate: run each gate scenario in turn (perfect-storm: all four layers engage;
# failure-paths: Kafka refused and reset, the impression queue at its cap, one DSP faulted
# twice, Redis down), judge it, write the reports. Every scenario runs even after one fails;
# the exit code is the first non-zero verdict code (1 failed, 3 inconclusive, 4 environment);
# an interrupt (130/143) stops the gate at once.
GATE_SCENARIOS ?= perfect-storm failure-paths
gate: install
	@rc=0; for s in $(GATE_SCENARIOS); do \
	  echo "== gate: $$s"; \
	  $(BIN)/spikegate run $$s --no-live; code=$$?; \
	  case $$code in 0) ;; 130|143) exit $$code ;; \
	    *) echo "== gate: $$s exited $$code"; [ $$rc -ne 0 ] || rc=$$code ;; esac; \
	done; exit $$rc

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# mypy cannot follow the editable install's folder mapping (harness/ -> spikegate.harness), so
# it checks a tree of links laid out the way the package installs.
typecheck: install
	@rm -rf build/mypy && mkdir -p build/mypy/spikegate
	@for d in harness target chaos; do ln -s ../../../$$d build/mypy/spikegate/$$d; done
	@ln -s ../../../spikegate/contract build/mypy/spikegate/contract
	@ln -s ../../../spikegate/__init__.py build/mypy/spikegate/__init__.py
	cd build/mypy && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p spikegate

bench: install
	@for b in tests/bench/*.py; do echo "== $$b" >&2; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

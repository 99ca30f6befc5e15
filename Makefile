# make run: the gateway in test mode on http://127.0.0.1:8000 (installs the runtime lock only)
# make test: lint, types, lock check and every test (what CI runs)
# make test-fast: the tests without the Space's tiny Llama (no torch at run time)
# make bench: the benchmark (see README)
# make lock: refresh requirements.txt, the runtime lock, from pyproject.toml
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime-stamp
DEV := $(VENV)/.dev-stamp
# How requirements.txt is made from pyproject.toml: runtime dependencies only, for every
# platform (uvloop's marker kept), Python 3.11 as .python-version says.
LOCK := $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--custom-compile-command "make lock" --annotation-style line

.PHONY: run test test-fast bench install lint lock lock-check system-deps clean

# The runtime, exactly as a Procfile platform installs it: from the lock, nothing else.
$(RUNTIME): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(RUNTIME)

# Everything the tests need, on top of the locked runtime (kept at its locked versions).
$(DEV): $(RUNTIME) pyproject.toml
	@# torch first and pinned: the CPU build this machine holds. Unpinned, pip would take the
	@# newest CUDA build (several GB) for the Space tests.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.txt -e '.[dev]'
	touch $(DEV)

install: $(DEV)

run: $(RUNTIME)
	$(BIN)/python -m proxy

lock: $(DEV)
	$(LOCK) -o requirements.txt

# Fails when requirements.txt no longer matches pyproject.toml (uv keeps the pins it can).
lock-check: $(DEV)
	cp requirements.txt $(VENV)/requirements.check.txt
	$(LOCK) -o $(VENV)/requirements.check.txt
	@diff -u requirements.txt $(VENV)/requirements.check.txt || \
		{ echo "requirements.txt is stale: run make lock and commit it" >&2; exit 1; }

lint: $(DEV) lock-check
	$(BIN)/ruff check proxy space tests bench index.py
	$(BIN)/ruff format --check proxy space tests bench index.py
	$(BIN)/mypy
	@# Only proxy/config/environment.py reads the environment: tests/config/test_settings.py holds that rule.

system-deps:
	scripts/system-deps.sh

test: lint system-deps
	$(BIN)/python -m pytest

test-fast: install system-deps
	$(BIN)/python -m pytest -m "not space"

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

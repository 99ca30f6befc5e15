# make run: the gateway in test mode on http://127.0.0.1:8000
# make test: lint, types and every test (what CI runs)
# make test-fast: the tests without the Space's tiny Llama (no torch at run time)
# make bench: the benchmark (see README)
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-fast bench install lint system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch first and pinned: the CPU build this machine holds. Unpinned, pip would take the
	@# newest CUDA build (several GB) for the Space tests.
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m proxy

lint: install
	$(BIN)/ruff check proxy space tests bench
	$(BIN)/ruff format --check proxy space tests bench
	$(BIN)/mypy
	@# Only the settings module reads the environment.
	@! grep -rnE 'os\.(environ|getenv)' proxy --include='*.py' | grep -v '^proxy/settings.py:'

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

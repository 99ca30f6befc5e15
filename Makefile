# make run: the gateway in test mode on http://127.0.0.1:8000
# make test: lint, types and every test (what CI runs)
# make bench: the benchmark (see README)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test bench install lint system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m proxy

lint: install
	$(BIN)/ruff check proxy tests bench
	$(BIN)/ruff format --check proxy tests bench
	$(BIN)/mypy
	@# Only the settings module reads the environment.
	@! grep -rnE 'os\.(environ|getenv)' proxy --include='*.py' | grep -v '^proxy/settings.py:'

system-deps:
	scripts/system-deps.sh

test: lint system-deps
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

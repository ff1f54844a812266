# imageblur: one Makefile for install, run and test. Role-specific targets live in mk/*.mk.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint typecheck unit model lock clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt scripts/fetch_model.py scripts/fetch_test_models.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python scripts/fetch_model.py
	$(BIN)/python scripts/fetch_test_models.py
	touch $(STAMP)

install: $(STAMP)  ## create .venv with the package, every back end, the dev tools and the model

model: $(STAMP)  ## (re)fetch and verify the face model
	$(BIN)/python scripts/fetch_model.py

run: install  ## serve the embedded default (API + worker, SQLite, local folder) on IMAGEBLUR_PORT
	$(BIN)/imageblur serve

lint: install  ## ruff
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src

typecheck: install  ## mypy strict on the package
	$(BIN)/mypy

test: install lint typecheck  ## every test: lint, types, unit, contract, end-to-end
	$(BIN)/python -m pytest

lock:  ## refresh constraints.txt from a clean install of the newest allowed versions
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet -e '.[dev]'
	{ head -2 constraints.txt; .venv-lock/bin/pip freeze --exclude-editable | grep -v '^imageblur'; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-lock

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

-include mk/*.mk

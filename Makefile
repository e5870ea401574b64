# lcrag: `make serve` and `make test` are the two commands a new user needs; both run `make setup` first,
# which is idempotent (each step is skipped when its output is newer than its inputs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
UV := $(BIN)/uv
INSTALLED := $(VENV)/.lcrag-installed
ARGS ?=
export UV_LINK_MODE := copy
export UV_PYTHON := $(BIN)/python
UV_INSTALL := $(UV) pip install --quiet --find-links /opt/wheels --excludes excludes.txt --compile-bytecode

.PHONY: setup serve test lint lock clean-venv

setup: $(INSTALLED)
	@$(BIN)/lcrag model prepare

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "lcrag needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)

$(UV): $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)

$(INSTALLED): $(UV) requirements.lock requirements-nodeps.txt pyproject.toml excludes.txt
	@echo "Installing pinned dependencies into $(VENV) ..."
	$(UV_INSTALL) -r requirements.lock
	$(UV_INSTALL) --no-deps -r requirements-nodeps.txt
	$(UV_INSTALL) --no-deps -e .
	@touch $@

serve: setup
	$(BIN)/lcrag serve $(ARGS)

test: setup lint
	$(BIN)/python -m pytest $(ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check --quiet .
	$(BIN)/ruff format --check --quiet .
	$(BIN)/mypy

# Recompile the full lock from pyproject.toml (CPU path); commit the result.
lock: $(UV)
	$(UV) pip compile pyproject.toml --extra cpu --extra dev --extra langchain --find-links /opt/wheels --excludes excludes.txt \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header --emit-find-links \
		-o requirements.lock

clean-venv:
	rm -rf $(VENV)

# Every target does its own set-up: a virtual environment in $(VENV) with the project
# installed in editable mode and the extras that the target needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A machine that ships a local CPU wheel of torch (this project's CI machines do) installs
# that one; a bare `torch` requirement would resolve to a CUDA build of several GB there.
# Elsewhere torch is whatever the platform's pip chooses.
LOCAL_TORCH_WHEEL := $(firstword $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl))
TORCH ?= $(if $(LOCAL_TORCH_WHEEL),$(LOCAL_TORCH_WHEEL),torch)
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
PYTEST_ARGS ?=

.PHONY: demo test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install "$(TORCH)"

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[test,lint,dask,ray,tables]"
	touch $@

$(VENV)/.demo-deps: pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[examples]"
	touch $@

demo: $(VENV)/.demo-deps
	$(BIN)/python -m skebflow demo --output demo-output

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd $(CURDIR) && $(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: $(VENV)/.test-deps
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.demo-deps
	$(BIN)/python -m skebflow bench speed --output bench-output

clean:
	rm -rf $(VENV) demo-output bench-output .pytest_cache .ruff_cache .hypothesis

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
# Extra options of sphinx-build, e.g. SPHINXOPTS="-D plot_gallery=0" to skip the examples.
SPHINXOPTS ?=

.PHONY: demo test lint format bench docs docs-check clean

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

$(VENV)/.docs-deps: pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[docs]"
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

# The site: every warning is an error and every cross-reference must resolve; the gallery
# runs every example in full (docs/conf.py).
docs: $(VENV)/.docs-deps
	$(BIN)/sphinx-build -W --keep-going -n -b html $(SPHINXOPTS) docs docs/_build/html

# The built site in headless Chromium: screenshots of the home page, EBFlowDensity's page and
# a gallery page, checked for content (tests/docs/test_site.py; screenshots in
# docs/_build/site-check). Installs Debian's chromium when it is missing.
docs-check: docs
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "docs-check: installing chromium (apt-get)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }
	SKEBFLOW_SITE_CHECK=required $(BIN)/python -m pytest -p no:cacheprovider -q tests/docs/test_site.py

clean:
	rm -rf $(VENV) demo-output bench-output .pytest_cache .ruff_cache .hypothesis
	rm -rf docs/_build docs/auto_examples docs/generated docs/sg_execution_times.rst

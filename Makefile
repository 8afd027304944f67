# One entry point for people and CI. Everything is installed into .venv from scratch.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
STAMP   := $(VENV)/.installed
# The rooms the type check covers (mypy, configured in pyproject.toml); each stays clean. Modules
# they import from other rooms are read for their types but their own errors are not reported.
TYPED   := tasks/contract tasks/store tasks/engine tasks/worker tasks/artifacts tasks/studies \
	clients/python/sharpness_client
# make test-fast's tests: the top-level rules (layout, imports, sizes, docs), the store, the
# studies, the gateway in process (TestClient on a private Redis) but for its slowest files, the
# SDK and CLI against scripted servers, and the worker's and engine's quick unit tests. Left to
# make test: integration (real worker processes), the engine's numerics, the worker's runs, real
# models and the SDK end to end.
FAST_TESTS := $(wildcard tests/test_*.py) tests/store tests/docs/test_configuration.py \
	tests/studies tests/api \
	tests/sdk/test_cli_output.py tests/sdk/test_errors.py tests/sdk/test_spec.py \
	tests/sdk/test_types_contract.py tests/sdk/test_packaging.py tests/sdk/test_lost_answer.py \
	tests/sdk/test_data_names.py tests/sdk/test_generalization_sdk.py \
	tests/worker/test_worker.py tests/worker/test_fencing.py tests/worker/test_final_events.py \
	tests/worker/test_targets_checked.py tests/worker/test_task_states.py tests/worker/test_reaper.py \
	tests/engine/test_losses.py tests/engine/test_basis.py tests/engine/test_pacbayes_orig.py \
	tests/engine/test_cancel_between_batches.py \
	--ignore=tests/api/test_readyz_queues.py --ignore=tests/api/test_checkpoint_ids.py \
	--ignore=tests/api/test_upload_attacks.py --ignore=tests/api/test_uri_addresses.py \
	--ignore=tests/api/test_retention.py --ignore=tests/api/test_store_indexes.py \
	--ignore=tests/api/test_plots.py

.PHONY: install run gateway worker redis test test-fast typecheck lint format bench bench-service \
	openapi configuration clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, from the pinned CPU wheel; constraints.txt pins it for every later install, so no
# dependency (transformers among them) can resolve another build.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -c constraints.txt -e '.[worker,dev]'
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
	$(BIN)/python -m mypy --follow-imports=silent $(TYPED)
	$(BIN)/python -m pytest -q -ra

## The quick lane, under two minutes on two cores: lint, format and type checks, then FAST_TESTS
## without the integration and slow marks (about 60 s of CPU). make test runs everything.
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy --follow-imports=silent $(TYPED)
	$(BIN)/python -m pytest -q -m "not integration and not slow" $(FAST_TESTS)

typecheck: install
	$(BIN)/python -m mypy --follow-imports=silent $(TYPED)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

openapi: install
	$(BIN)/python -m service.openapi_export > openapi.yaml

## docs/configuration.md from the settings model (tests/docs/test_configuration.py checks it).
configuration: install
	$(BIN)/python -m service.config_docs > docs/configuration.md

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

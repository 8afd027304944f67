# Two targets from one file:
#   gateway  the FastAPI gateway: the base install (`pip install .`), no torch. The default.
#   worker   a Celery worker with the engine: torch first and pinned like the Makefile, then
#            `pip install .[worker]` (CUDA-capable: torch's Linux wheel ships the CUDA runtime;
#            the host needs the NVIDIA driver and container toolkit).
#   docker build --target gateway -t sharpness-gateway .
#   docker build --target worker -t sharpness-worker .
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SHARPNESS_DATA_DIR=/data

WORKDIR /app
RUN useradd --create-home --uid 1000 sharpness && mkdir -p /data && chown sharpness /data
VOLUME ["/data"]


FROM base AS worker

# torch first and pinned like the Makefile, so installing the package resolves nothing else.
ARG TORCH=torch==2.13.0
RUN pip install "${TORCH}"

COPY pyproject.toml ./
COPY tasks ./tasks
COPY service ./service
RUN pip install ".[worker]"

USER sharpness
# warm shutdown on SIGTERM: a running job goes back to the queue before the process exits
CMD ["python", "-m", "tasks.worker"]


# Last, so a plain `docker build .` makes the gateway.
FROM base AS gateway

ENV SHARPNESS_HOST=0.0.0.0 \
    SHARPNESS_PORT=8000

COPY pyproject.toml ./
COPY tasks ./tasks
COPY service ./service
RUN pip install .

USER sharpness
EXPOSE 8000

# as `make gateway`: SHARPNESS_GATEWAY_WORKERS uvicorn processes (default min(4, CPUs)) under
# service.serve, exec'd in place, so it gets SIGTERM directly and shuts down cleanly
CMD ["python", "-m", "service.run_all", "gateway"]

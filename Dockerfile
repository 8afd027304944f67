# One image for the gateway and the workers (CUDA-capable: torch's Linux wheel ships the CUDA
# runtime; the host needs the NVIDIA driver and container toolkit). The gateway is the default
# command and never imports torch; run a worker with `python -m tasks.worker`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SHARPNESS_DATA_DIR=/data \
    SHARPNESS_HOST=0.0.0.0 \
    SHARPNESS_PORT=8000

WORKDIR /app

# torch first and pinned like the Makefile, so installing the package resolves nothing else.
ARG TORCH=torch==2.13.0
RUN pip install "${TORCH}"

COPY pyproject.toml ./
COPY tasks ./tasks
COPY service ./service
RUN pip install .

RUN useradd --create-home --uid 1000 sharpness && mkdir -p /data && chown sharpness /data
USER sharpness
VOLUME ["/data"]
EXPOSE 8000

# as `make gateway`: SHARPNESS_GATEWAY_WORKERS uvicorn processes (default min(4, CPUs)) under
# service.serve, exec'd in place, so it gets SIGTERM directly and shuts down cleanly
CMD ["python", "-m", "service.run_all", "gateway"]

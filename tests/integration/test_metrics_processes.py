"""Several gateway processes answer the same /metrics and /v1/queue: three real uvicorn
processes (`service.serve`, as `make gateway` starts them) next to a single-process gateway,
on one Redis. Records are written through the store, as workers write them; no worker is
needed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tasks.contract.spec import JobSpec, JobStatus
from tasks.store.local_redis import PrivateRedis
from tasks.store.records import JobStore
from tests import databases
from tests.processes import spawn_gateway, stop_group, wait_answering

pytestmark = pytest.mark.integration

DB = databases.METRICS_PROCESSES


@pytest.fixture
def gateways(redis_server: PrivateRedis, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    redis.Redis.from_url(url).flushdb()
    env = {**os.environ, "SHARPNESS_REDIS_URL": url, "SHARPNESS_DATA_DIR": str(tmp_path)}
    log = tmp_path / "gateways.log"
    many, many_url = spawn_gateway(env, 3, log)
    one, one_url = spawn_gateway(env, 1, log)
    try:
        wait_answering(many_url, [many], log.read_text)
        wait_answering(one_url, [one], log.read_text)
        yield url, many_url, one_url
    finally:
        stop_group(many, one, timeout_s=20)


def _samples(text: str) -> dict[str, float]:
    """Every sample but the per-process ones and the ages (read at different instants)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "process_")) and "age_seconds" not in line:
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_every_gateway_process_reports_the_same(gateways: tuple[str, str, str]) -> None:
    redis_url, many_url, one_url = gateways
    store = JobStore.from_url(redis_url)
    store.heartbeat("w1@host", "cpu")
    spec = JobSpec.model_validate(
        {"model": "a" * 64, "dataset": {"id": "d" * 64}, "measures": [{"name": "lambda_max"}]}
    )
    for i, status in enumerate([JobStatus.succeeded] * 3 + [JobStatus.failed, None, None]):
        job = store.create(spec, "cpu" if i % 2 else "gpu")
        if status is not None:
            attempt = store.mark_running(job.id, "w1@host", "cpu", {})
            store.finish(job.id, status, results={}, attempt=attempt)
    running = store.create(spec, "cpu")
    store.mark_running(running.id, "w1@host", "cpu", {})

    reference = _samples(httpx.get(f"{one_url}/metrics", timeout=30).text)
    assert reference['sharpness_jobs{status="succeeded"}'] == 3
    assert reference['sharpness_jobs{status="running"}'] == 1
    assert reference['celery_worker_tasks_active{hostname="w1@host"}'] == 1
    for _ in range(12):  # a new connection each time: the kernel spreads them over processes
        r = httpx.get(f"{many_url}/metrics", timeout=30)
        assert _samples(r.text) == reference
        queue = httpx.get(f"{many_url}/v1/queue", timeout=30).json()
        assert queue["jobs_by_status"] == {
            "queued": 2,
            "running": 1,
            "succeeded": 3,
            "failed": 1,
            "cancelled": 0,
        }

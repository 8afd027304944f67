"""Retention end to end: a gateway and a worker both run with a retention of a few seconds
(SHARPNESS_RETENTION_DAYS); a job the worker finishes is listed, counted and readable until
then and gone after, with its Idempotency-Key; a queued job never expires; the counters of
ended runs keep it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from tasks.store.local_redis import PrivateRedis
from tests import artifacts as A
from tests import databases
from tests.integration.conftest import Stack, start_stack

pytestmark = pytest.mark.integration

RETENTION_S = 4.0


@pytest.fixture
def short_stack(redis_server: PrivateRedis, tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(
        redis_server, databases.RETENTION, tmp_path / "service", retention_days=RETENTION_S / 86_400
    )
    yield s
    s.stop()


def test_a_finished_job_expires_and_a_queued_one_stays(short_stack: Stack, tmp_path: Path) -> None:
    s = short_stack
    x, y = A.data(n=32, seed=3)
    model_id = s.upload_id("models", A.export(A.mlp(seed=3), tmp_path / "m.pt2", 4, torch.float32))
    data_id = s.upload_id("datasets", A.save_npz(tmp_path / "d.npz", x, y))
    spec = {"model": model_id, "dataset": {"id": data_id}, "measures": [{"name": "lambda_max"}]}
    r = httpx.post(f"{s.url}/v1/jobs", json=spec, headers={"Idempotency-Key": "k1"}, timeout=30)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    waiting = s.submit({**spec, "device": "cuda"})  # no GPU worker: it stays queued
    job = s.wait(job_id)
    ended = time.monotonic()
    assert job["status"] == "succeeded", job["error"]
    assert job_id in {j["id"] for j in httpx.get(f"{s.url}/v1/jobs", timeout=30).json()["items"]}
    queue = httpx.get(f"{s.url}/v1/queue", timeout=30).json()
    assert queue["jobs_by_status"]["succeeded"] == 1

    while httpx.get(f"{s.url}/v1/jobs/{job_id}", timeout=30).status_code == 200:
        assert time.monotonic() - ended < RETENTION_S + 10, "the finished job did not expire"
        time.sleep(0.2)
    listed = httpx.get(f"{s.url}/v1/jobs", timeout=30).json()["items"]
    assert [j["id"] for j in listed] == [waiting]
    assert httpx.get(f"{s.url}/v1/jobs", params={"status": "succeeded"}).json()["items"] == []
    queue = httpx.get(f"{s.url}/v1/queue", timeout=30).json()
    assert queue["jobs_by_status"]["succeeded"] == 0 and queue["jobs_by_status"]["queued"] == 1
    gpu = next(q for q in queue["queues"] if q["name"] == "gpu")
    assert gpu["queued_jobs"] == 1
    # the key went with the record: the same key now makes a new job
    again = httpx.post(f"{s.url}/v1/jobs", json=spec, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 202 and again.json()["id"] != job_id
    s.wait(again.json()["id"])
    assert s.job(waiting)["status"] == "queued"  # older than the retention, never expires
    metrics = httpx.get(f"{s.url}/metrics", timeout=30).text
    assert 'sharpness_runs_ended_total{kind="job",outcome="succeeded",queue="cpu"} 2.0' in metrics
    assert 'sharpness_queue_wait_seconds_count{kind="job",queue="cpu"} 2.0' in metrics

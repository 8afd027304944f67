"""The worker process's own duties: queues it consumes, heartbeat, lock refresh, hard limit."""

from __future__ import annotations

import time
import uuid

import pytest

from tasks.settings import Settings
from tasks.spec import JobSpec, JobStatus
from tasks.worker import process as worker
from tasks.worker.runtime import ActiveJob, WorkerRuntime, lock_ttl


@pytest.fixture
def rt(redis_url: str, tmp_path) -> WorkerRuntime:
    name = f"w-{uuid.uuid4().hex[:6]}@test"
    return WorkerRuntime.create(name, Settings(redis_url=redis_url, data_dir=tmp_path))


def test_queues() -> None:
    s = Settings()
    assert worker.queues_for(s, has_cuda=False) == ["cpu"]
    assert worker.queues_for(s, has_cuda=True) == ["gpu", "cpu"]
    assert worker.queues_for(Settings(worker_queues="cpu"), has_cuda=True) == ["cpu"]
    with pytest.raises(SystemExit, match="no CUDA"):
        worker.queues_for(Settings(worker_queues="gpu"), has_cuda=False)
    with pytest.raises(SystemExit, match="unknown queue"):
        worker.queues_for(Settings(worker_queues="tpu"), has_cuda=False)


def _job(rt: WorkerRuntime) -> str:
    spec = JobSpec.model_validate(
        {"model": "a" * 64, "dataset": {"id": "b" * 64}, "measures": [{"name": "trace"}]}
    )
    return rt.store.create(spec, "cpu").id


def test_heartbeat_announces_and_keeps_the_lock(rt: WorkerRuntime) -> None:
    job_id = _job(rt)
    assert rt.store.acquire(job_id, rt.hostname, 2)
    rt.active = ActiveJob(job_id)
    worker.Heartbeat(rt).beat()
    assert any(w["hostname"] == rt.hostname for w in rt.store.workers())
    assert rt.store.r.ttl(f"sharpness:lock:{job_id}") > 2  # refreshed to lock_ttl
    assert lock_ttl(rt.settings) >= 3


def test_hard_time_limit_fails_the_job_and_ends_the_process(
    rt: WorkerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _job(rt)
    rt.settings.hard_time_limit_s = 1
    rt.active = ActiveJob(job_id, started=time.monotonic() - 2)

    def fake_exit(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(worker.os, "_exit", fake_exit)
    with pytest.raises(SystemExit) as ended:
        worker.Heartbeat(rt).beat()
    assert ended.value.code == worker.HARD_LIMIT_EXIT
    job = rt.store.get(job_id)
    assert job.status == JobStatus.failed and "hard time limit" in job.error.detail

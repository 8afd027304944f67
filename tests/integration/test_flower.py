"""Real Flower (`celery -A tasks.celery_app flower`) watching a real prefork worker.

Flower builds its task list from the worker's task events (`/api/tasks`, `/api/task/info`,
the Tasks page) and reads task results from the result backend (`/api/task/result`). A job
that fails is a FAILURE in the task list (sent as the gateway sends it, with no result kept,
the result API has nothing for it: PENDING); a cancelled job is REVOKED in the result backend
and in the task list (the worker sends a task-revoked event, Celery sending none for Ignore).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tasks.celery_app import RUN_JOB_TASK
from tasks.redis_server import PrivateRedis, free_port
from tasks.settings import Settings
from tasks.spec import JobStatus
from tasks.worker.runtime import WorkerRuntime
from tests import databases
from tests.processes import ROOT, spawn_worker, stop, worker_env
from tests.worker.trace_jobs import send, trace_job

pytestmark = pytest.mark.integration

DB = databases.FLOWER  # events too: Redis fanout channels carry the database number
WORKER = "flower@test"


@dataclass
class Service:
    worker: subprocess.Popen
    flower: subprocess.Popen
    url: str  # Flower's
    rt: WorkerRuntime
    logs_dir: Path

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.logs_dir.glob("*.log"))
        )

    def api(self, path: str) -> Any:
        resp = httpx.get(f"{self.url}{path}", timeout=10)
        assert resp.status_code == 200, (resp.status_code, resp.text)
        return resp.json()

    def poll(self, what: Callable[[], Any], ok: Callable[[Any], bool], timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            for proc in (self.worker, self.flower):
                assert proc.poll() is None, f"a process exited\n{self.logs()}"
            try:
                value = what()
            except (httpx.HTTPError, AssertionError) as exc:
                value = exc
            if not isinstance(value, Exception) and ok(value):
                return value
            assert time.monotonic() < deadline, f"last: {value!r}\n{self.logs()}"
            time.sleep(0.25)


@pytest.fixture(scope="module")
def service(
    redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    tmp_path = tmp_path_factory.mktemp("flower")
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    redis.Redis.from_url(url).flushdb()
    env = worker_env(url, tmp_path, SHARPNESS_WORKER_NAME=WORKER)
    port = free_port()
    started: list[subprocess.Popen] = []
    try:
        # Flower first: it sees only the events sent after its receiver is bound
        with (tmp_path / "flower.log").open("ab") as out:
            flower = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tasks.celery_app", "flower"]
                + [f"--port={port}", "--address=127.0.0.1"],
                cwd=ROOT,
                env={**env, "FLOWER_UNAUTHENTICATED_API": "true"},
                stdout=out,
                stderr=out,
            )
        started.append(flower)
        worker = spawn_worker(env, tmp_path / "worker.log")
        started.append(worker)
        rt = WorkerRuntime.create("client@test", Settings(redis_url=url, data_dir=tmp_path))
        s = Service(worker, flower, f"http://127.0.0.1:{port}", rt, tmp_path)
        # Flower answers and has the worker's events (online, heartbeats): it is listening
        s.poll(lambda: s.api("/api/workers?status=true"), lambda w: w.get(WORKER), 90)
        yield s
    finally:
        for proc in reversed(started):
            stop(proc, timeout_s=30)


def _wait(s: Service, job_id: str, until: Callable[[Any], bool], timeout_s: float = 60) -> Any:
    return s.poll(lambda: s.rt.store.get(job_id), until, timeout_s)


def test_a_failed_job_is_a_failure_in_flower(service: Service, tmp_path: Path) -> None:
    s = service
    failed = trace_job(s.rt, tmp_path, 10, model="a" * 64)  # no such model: it fails
    send(s.rt, failed)
    assert _wait(s, failed, lambda j: j.status.terminal).status == JobStatus.failed

    info = s.poll(lambda: s.api(f"/api/task/info/{failed}"), lambda t: t["state"] != "STARTED", 60)
    assert info["state"] == "FAILURE", info
    assert info["name"] == RUN_JOB_TASK and info["worker"] == WORKER, info
    assert "Model not found" in info["exception"], info
    listed = s.api(f"/api/tasks?state=FAILURE&workername={WORKER}")
    assert list(listed) == [failed] and listed[failed]["state"] == "FAILURE", listed


@pytest.fixture(scope="module")
def cancelled(service: Service, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A job cancelled while it computes (as POST /v1/jobs/{id}/cancel cancels it)."""
    s = service
    job_id = trace_job(s.rt, tmp_path_factory.mktemp("cancel"), num_hvps=100_000)  # minutes
    send(s.rt, job_id)
    _wait(s, job_id, lambda j: j.status == JobStatus.running and j.progress["trace"].iteration)
    s.rt.store.request_cancel(job_id)
    assert _wait(s, job_id, lambda j: j.status.terminal).status == JobStatus.cancelled
    return job_id


def test_a_cancelled_job_is_revoked_in_flowers_result_api(service: Service, cancelled: str) -> None:
    result = service.poll(
        lambda: service.api(f"/api/task/result/{cancelled}"), lambda r: r["state"] == "REVOKED", 30
    )
    assert result["task-id"] == cancelled, result


def test_a_cancelled_job_is_revoked_in_flowers_task_list(service: Service, cancelled: str) -> None:
    info = service.poll(
        lambda: service.api(f"/api/task/info/{cancelled}"), lambda t: t["state"] != "STARTED", 5
    )
    assert info["state"] == "REVOKED", info

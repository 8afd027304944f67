"""Celery task states say what the run did (FAILURE, REVOKED, SUCCESS), so Flower's and
celery-exporter's failure alerts can fire; and `celery -A tasks.celery_app` finds the app."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from celery import states

import tasks.worker.job  # noqa: F401  registers the task on every app
from tasks.celery_app import RUN_JOB_TASK, make_celery
from tasks.settings import Settings
from tasks.spec import JobSpec, JobStatus
from tasks.worker import runtime
from tasks.worker.run import RunFailed
from tasks.worker.runtime import WorkerRuntime


@pytest.fixture
def rt(redis_url: str, tmp_path: Path):
    settings = Settings(redis_url=redis_url, data_dir=tmp_path, heartbeat_s=1)
    rt = WorkerRuntime.create(f"w-{uuid.uuid4().hex[:6]}@test", settings)
    previous = runtime._current
    runtime.install(rt)
    yield rt
    runtime._current = previous


def _job(rt: WorkerRuntime) -> str:
    spec = JobSpec.model_validate(  # names a model that is not in the blob store: it fails
        {"model": "a" * 64, "dataset": {"id": "b" * 64}, "measures": [{"name": "trace"}]}
    )
    return rt.store.create(spec, "cpu").id


def test_a_failed_job_is_a_failure_and_a_cancelled_one_revoked(rt: WorkerRuntime) -> None:
    app = make_celery(rt.settings)
    task = app.tasks[RUN_JOB_TASK]

    failed_id = _job(rt)
    result = task.apply(args=[failed_id], task_id=failed_id)
    assert result.state == states.FAILURE and isinstance(result.result, RunFailed)
    assert "Model not found" in str(result.result)
    assert rt.store.get(failed_id).status == JobStatus.failed

    cancelled_id = _job(rt)
    rt.store.set_fields(cancelled_id, cancel_requested=1)  # asked while a worker takes it
    task.apply(args=[cancelled_id], task_id=cancelled_id)
    assert rt.store.get(cancelled_id).status == JobStatus.cancelled
    assert app.AsyncResult(cancelled_id).state == states.REVOKED

    done_id = _job(rt)
    rt.store.finish(done_id, JobStatus.succeeded, results={})
    result = task.apply(args=[done_id], task_id=done_id)  # a redelivered finished job
    assert result.state == states.SUCCESS and result.result == "skipped"


def test_celery_command_finds_the_app(redis_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks.celery_app", "report"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SHARPNESS_REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    # our app's settings, not a default app's
    assert "task_acks_late: True" in out.stdout and "task_reject_on_worker_lost: True" in out.stdout
    assert redis_url.split("//")[1].split("/")[0] in out.stdout  # the broker named by the env

"""Celery task states say what the record's status is (FAILURE, REVOKED, SUCCESS), in the
result backend too (the messages carry ignore_result), whoever ended the record: the run, the
reaper, or the gateway before a worker took the message; a run that lost its record writes
nothing. So Flower's and celery-exporter's failure alerts can fire; and `celery -A
tasks.app` finds the app."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from celery import states
from celery.exceptions import Ignore

import tasks.jobs  # noqa: F401  registers the task on every app
from tasks import reaper
from tasks.app import RUN_JOB_TASK, make_celery
from tasks.contract.spec import JobSpec, JobStatus
from tasks.settings import Settings
from tasks.worker import run as runs
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

    stored = app.AsyncResult(failed_id)  # the result backend, as Flower's result API reads it
    assert stored.state == states.FAILURE and isinstance(stored.result, RunFailed)
    assert "Model not found" in str(stored.result)

    cancelled_id = _job(rt)
    rt.store.set_fields(cancelled_id, cancel_requested=1)  # asked while a worker takes it
    task.apply(args=[cancelled_id], task_id=cancelled_id)
    assert rt.store.get(cancelled_id).status == JobStatus.cancelled
    assert app.AsyncResult(cancelled_id).state == states.REVOKED

    done_id = _job(rt)
    rt.store.finish(done_id, JobStatus.succeeded, results={})
    result = task.apply(args=[done_id], task_id=done_id)  # a redelivered finished job
    assert result.state == states.SUCCESS and result.result == "skipped"
    assert app.AsyncResult(done_id).state == states.SUCCESS


def test_a_message_for_an_ended_record_states_the_records_status(rt: WorkerRuntime) -> None:
    """Ended before a worker took its message (cancelled while queued, failed by the reaper):
    the task is what the record is, not a SUCCESS for the skipped run."""
    app = make_celery(rt.settings)
    task = app.tasks[RUN_JOB_TASK]

    cancelled_id = _job(rt)
    rt.store.request_cancel(cancelled_id)  # queued: cancelled at once, by the gateway
    assert task.apply(args=[cancelled_id], task_id=cancelled_id).state == states.IGNORED
    assert app.AsyncResult(cancelled_id).state == states.REVOKED

    failed_id = _job(rt)
    assert rt.store.acquire(failed_id, "dead@test", 30)
    attempt = rt.store.mark_running(failed_id, "dead@test", "cpu", {})
    rt.store.release(failed_id)
    problem = reaper.lost_problem("dead@test", attempt, 1)
    ended = rt.store.end_run(
        failed_id, "worker-lost", attempt=attempt, max_attempts=1, error=problem
    )
    assert ended == JobStatus.failed
    result = task.apply(args=[failed_id], task_id=failed_id)  # its message, redelivered
    assert result.state == states.FAILURE and "Worker lost" in str(result.result)
    assert app.AsyncResult(failed_id).state == states.FAILURE


def test_a_run_that_lost_its_record_writes_no_result(rt: WorkerRuntime) -> None:
    """Replaced while it computed (the reaper ended its attempt, a second run finished the
    job): its finish is refused and its task ends without a state of its own."""
    app = make_celery(rt.settings)
    task = app.tasks[RUN_JOB_TASK]
    job_id = _job(rt)
    second: list[int] = []

    def replaced(run: runs.Run) -> None:  # what happens to the record while this run is away
        store = run.store
        assert store.end_run(job_id, "worker-lost", attempt=run.attempt) == JobStatus.queued
        if not second:
            return  # only requeued: the next run has not started yet
        second.append(store.mark_running(job_id, "other@test", "cpu", {}))
        store.finish(job_id, JobStatus.failed, error=reaper.lost_problem("x", 2, 2))

    assert runs.execute(rt, rt.store, job_id, replaced, "") == "lost"
    assert rt.store.get(job_id).status == JobStatus.queued  # not succeeded by the lost run
    with pytest.raises(Ignore):
        runs.task_outcome(task, "lost", rt.store, job_id)
    assert app.AsyncResult(job_id).state == states.PENDING  # nothing written

    second.append(0)
    rt.store.set_fields(job_id, status="running", attempts=1)  # as if started again
    rt.store.r.sadd(rt.store.running_key(), job_id)
    assert runs.execute(rt, rt.store, job_id, replaced, "") == "lost"
    assert rt.store.get(job_id).status == JobStatus.failed
    with pytest.raises(Ignore):
        runs.task_outcome(task, "lost", rt.store, job_id)
    assert app.AsyncResult(job_id).state == states.PENDING
    # the message's next delivery states the record's status
    result = task.apply(args=[job_id], task_id=job_id)
    assert result.state == states.FAILURE
    assert app.AsyncResult(job_id).state == states.FAILURE


def test_the_reaper_ends_or_requeues_the_task_in_celery(rt: WorkerRuntime) -> None:
    """A lost run the sweep requeues is RETRY in the result backend; one it fails (attempts
    spent) FAILURE, one it cancels REVOKED: no worker would run those again to say so."""
    app = make_celery(rt.settings)
    send = reaper.celery_sender(app, "sweeper@test")
    settings = rt.settings.model_copy(update={"max_attempts": 2})
    ids = {}
    for name in ("requeued", "failed", "cancelled"):
        job_id = ids[name] = _job(rt)
        if name == "failed":  # its first attempt was lost already
            rt.store.set_fields(job_id, attempts=1)
        if name == "cancelled":
            rt.store.set_fields(job_id, cancel_requested=1)
        rt.store.mark_running(job_id, "dead@test", "cpu", {})  # no lock, no heartbeat
    reaped = {r.id: r.status for r in reaper.sweep(rt.store, settings, send)}
    assert reaped == {
        ids["requeued"]: JobStatus.queued,
        ids["failed"]: JobStatus.failed,
        ids["cancelled"]: JobStatus.cancelled,
    }
    assert app.AsyncResult(ids["requeued"]).state == states.RETRY
    failed = app.AsyncResult(ids["failed"])
    assert failed.state == states.FAILURE and "Worker lost" in str(failed.result)
    assert app.AsyncResult(ids["cancelled"]).state == states.REVOKED


def test_celery_command_finds_the_app(redis_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks.app", "report"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SHARPNESS_REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    # our app's settings, not a default app's
    assert "task_acks_late: True" in out.stdout and "task_reject_on_worker_lost: True" in out.stdout
    assert redis_url.split("//")[1].split("/")[0] in out.stdout  # the broker named by the env

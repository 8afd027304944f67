"""A real worker (`python -m tasks.worker`: prefork pool, one child) against the suite's Redis.

While a job computes in the child, the main process answers `celery inspect` (a real
`celery -A tasks.celery_app` subprocess); a failed job is a FAILURE to Celery (its result and
the task-failed event Flower and celery-exporter read), a cancelled one REVOKED; a child
SIGKILLed mid-job is a lost worker: the message is requeued, the worker's next child ends the
killed attempt as worker-lost and finishes the job once; a job past the hard time limit is
killed by the main process, recorded failed once, and the next job runs in a new child.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import states

from tasks.celery_app import RUN_JOB_TASK, make_celery
from tasks.redis_server import PrivateRedis
from tasks.settings import Settings
from tasks.spec import JobStatus
from tasks.worker.runtime import WorkerRuntime
from tests import databases
from tests.processes import ROOT, spawn_worker, stop, worker_env
from tests.worker.trace_jobs import send, trace_job

DB = databases.PREFORK


@dataclass
class Worker:
    proc: subprocess.Popen
    env: dict[str, str]
    log: Path
    rt: WorkerRuntime

    def celery(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "celery", "-A", "tasks.celery_app", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=90,
        )

    def active(self) -> list[dict[str, Any]]:
        """`celery inspect active` as JSON: every running task of every worker that answered."""
        out = self.celery("inspect", "active", "--json", "--timeout", "10")
        assert out.returncode == 0, out.stdout + out.stderr
        return [
            t for tasks in json.loads(out.stdout.strip().splitlines()[-1]).values() for t in tasks
        ]

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextmanager
def started(redis_server: PrivateRedis, tmp_path: Path, **settings: str) -> Iterator[Worker]:
    """A real worker with these SHARPNESS_ settings, ready, on a database emptied first."""
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    redis.Redis.from_url(url).flushdb()
    env = worker_env(url, tmp_path, SHARPNESS_WORKER_NAME="prefork@test", **settings)
    log = tmp_path / "worker.log"
    proc = spawn_worker(env, log)
    rt = WorkerRuntime.create("client@test", Settings(redis_url=url, data_dir=tmp_path))
    w = Worker(proc, env, log, rt)
    try:
        deadline = time.monotonic() + 120
        while "ready." not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, w.logs()
            time.sleep(0.2)
        yield w
    finally:
        stop(proc, timeout_s=60)


@pytest.fixture
def worker(redis_server: PrivateRedis, tmp_path: Path) -> Iterator[Worker]:
    with started(redis_server, tmp_path) as w:
        yield w


def _wait(w: Worker, job_id: str, until: Any, timeout_s: float = 180.0):
    deadline = time.monotonic() + timeout_s
    while not until(job := w.rt.store.get(job_id)):
        assert time.monotonic() < deadline and w.proc.poll() is None, (job, w.logs())
        time.sleep(0.1)
    return job


def _computing(job: Any) -> bool:
    return job.status == JobStatus.running and job.progress["trace"].iteration > 0


def test_inspect_lists_the_running_job_and_a_cancel_is_revoked(
    worker: Worker, tmp_path: Path
) -> None:
    job_id = trace_job(worker.rt, tmp_path, num_hvps=100_000)  # minutes of work: it is cancelled
    send(worker.rt, job_id, ignore_result=False)
    _wait(worker, job_id, _computing)
    [task] = worker.active()  # the main process answers while the child computes
    assert task["id"] == job_id and task["name"] == RUN_JOB_TASK and task["args"] == [job_id]
    assert task["hostname"] == "prefork@test" and task["worker_pid"] != worker.proc.pid
    ping = worker.celery("inspect", "ping", "--timeout", "10")
    assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr
    assert _wait(worker, job_id, _computing).status == JobStatus.running  # still computing

    worker.rt.store.request_cancel(job_id)
    done = _wait(worker, job_id, lambda j: j.status.terminal)
    assert done.status == JobStatus.cancelled
    app = make_celery(worker.rt.settings)
    deadline = time.monotonic() + 30
    while app.AsyncResult(job_id).state != states.REVOKED:
        assert time.monotonic() < deadline, app.AsyncResult(job_id).state
        time.sleep(0.2)


def test_a_failed_job_is_a_celery_failure(worker: Worker, tmp_path: Path) -> None:
    app = make_celery(worker.rt.settings)
    failed: list[dict[str, Any]] = []
    receiving = threading.Event()

    def on_failed(event: dict[str, Any]) -> None:
        failed.append(event)

    def listen() -> None:  # what Flower and celery-exporter read
        with app.connection_for_read() as conn:
            recv = app.events.Receiver(conn, handlers={"task-failed": on_failed})
            receiving.set()
            for _ in recv.itercapture(limit=None, timeout=60, wakeup=False):
                if len(failed) == 2:
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert receiving.wait(30)
    time.sleep(1)  # the receiver's queue is bound
    as_gateway = trace_job(worker.rt, tmp_path, 10, model="a" * 64)  # no such model: it fails
    send(worker.rt, as_gateway)  # ignore_result, as the gateway sends: the event tells
    kept = trace_job(worker.rt, tmp_path, 10, model="a" * 64)
    send(worker.rt, kept, ignore_result=False)

    for job_id in (as_gateway, kept):
        assert _wait(worker, job_id, lambda j: j.status.terminal).status == JobStatus.failed
    result = app.AsyncResult(kept)
    result.get(timeout=60, propagate=False)
    assert result.state == states.FAILURE and "Model not found" in str(result.result)
    listener.join(timeout=60)
    assert sorted(e["uuid"] for e in failed) == sorted([as_gateway, kept])
    assert all("Model not found" in e["exception"] for e in failed)


def test_a_killed_child_is_a_lost_worker_and_its_job_runs_again(
    worker: Worker, tmp_path: Path
) -> None:
    import psutil

    job_id = trace_job(worker.rt, tmp_path, num_hvps=5_000)
    send(worker.rt, job_id)
    first = _wait(worker, job_id, _computing)
    [child] = psutil.Process(worker.proc.pid).children()  # the pool's one child
    child.send_signal(signal.SIGKILL)  # the OOM killer's way

    done = _wait(worker, job_id, lambda j: j.status.terminal, timeout_s=240)
    assert done.status == JobStatus.succeeded, done.error
    assert done.results["trace"].hvps >= 5_000 and done.attempts == 2
    assert [(a.attempt, a.worker, a.outcome) for a in done.attempt_history] == [
        (1, first.worker, "worker-lost"),
        (2, "prefork@test", "succeeded"),
    ]
    assert worker.proc.poll() is None  # the main process lived on
    time.sleep(2)
    again = worker.rt.store.get(job_id)
    assert again.attempts == 2 and again.finished_at == done.finished_at


def test_past_the_hard_time_limit_the_job_fails_once_and_the_worker_goes_on(
    redis_server: PrivateRedis, tmp_path: Path
) -> None:
    """A step that never returns (a hung collective, a stuck driver call), made here by
    stopping the child: it handles no signal, so the soft limit's exception never comes, and
    Celery's main process kills the child at the hard limit. The run is failed once, its
    message acknowledged (never run again), and the next job runs in a new child."""
    import psutil

    soft_s, hard_s = 3, 6
    with started(
        redis_server,
        tmp_path,
        SHARPNESS_SOFT_TIME_LIMIT_S=str(soft_s),
        SHARPNESS_HARD_TIME_LIMIT_S=str(hard_s),
    ) as worker:
        job_id = trace_job(worker.rt, tmp_path, num_hvps=100_000)  # minutes of work
        send(worker.rt, job_id)
        running = _wait(worker, job_id, _computing)
        [child] = psutil.Process(worker.proc.pid).children()
        child.send_signal(signal.SIGSTOP)
        done = _wait(worker, job_id, lambda j: j.status.terminal, timeout_s=120)
        assert done.status == JobStatus.failed and done.attempts == 1, (done, worker.logs())
        assert "hard time limit" in done.error.detail and f"{hard_s} s" in done.error.detail
        assert (done.finished_at - running.started_at).total_seconds() < hard_s + 30
        child.wait(timeout=30)  # killed, not left stopped
        assert worker.proc.poll() is None  # the main process lived on

        quick = trace_job(worker.rt, tmp_path, num_hvps=10)  # runs in the new child
        send(worker.rt, quick)
        assert _wait(worker, quick, lambda j: j.status.terminal).status == JobStatus.succeeded
        again = worker.rt.store.get(job_id)  # acknowledged: never delivered again
        assert again.status == JobStatus.failed and again.attempts == 1
        assert again.finished_at == done.finished_at
        assert not worker.rt.store.r.exists(worker.rt.store.lock_key(job_id))

"""A real worker (`python -m tasks.worker`: prefork pool, one child) against the suite's Redis.

While a job computes in the child, the main process answers `celery inspect` (a real
`celery -A tasks.app` subprocess); a failed job is a FAILURE to Celery (its result and
the task-failed event Flower and celery-exporter read), a cancelled one REVOKED; a child
SIGKILLed mid-job is a lost worker: the message is requeued, the worker's next child ends the
killed attempt as worker-lost and finishes the job once; a job past the hard time limit is
killed by the main process, recorded failed once, and the next job runs in a new child.

While a CPU-heavy job computes, `app.control.inspect().active()` is answered and lists it
(the child runs at a lower priority with one core fewer: tasks.worker.process), and a cancel
stops a job of every measure kind that would run for minutes: it ends `cancelled`, REVOKED
to Celery (bench/cancel_latency.py times both; the tests wait for states only).
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

import numpy as np
import pytest
import redis
import torch
from celery import states
from torch import nn

from tasks.app import RUN_JOB_TASK, make_celery
from tasks.contract.spec import JobSpec, JobStatus
from tasks.settings import Settings
from tasks.store.local_redis import PrivateRedis
from tasks.worker.process import CHILD_NICENESS
from tasks.worker.runtime import WorkerRuntime
from tests import artifacts as A
from tests import databases
from tests.processes import ROOT, spawn_worker, stop, worker_env
from tests.worker.blobs import put
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
            [sys.executable, "-m", "celery", "-A", "tasks.app", *args],
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


def _measuring(job: Any, name: str) -> bool:
    return job.status == JobStatus.running and job.progress[name].state == "running"


def _computing_or_ended(job: Any) -> bool:
    return _computing(job) or job.status.terminal


LONG = 100_000  # products or iterations: minutes of work on the model of `heavy_job`


def heavy_job(rt: WorkerRuntime, tmp_path: Path, name: str, params: dict[str, Any]) -> str:
    """Record a job measuring `name` with `params` on a float32 MLP of about 300,000
    parameters and 512 examples in batches of 128: CPU-heavy, and with these parameters
    minutes of work. Returns its id; nothing is sent yet."""
    model_path = tmp_path / "heavy.pt2"
    if not model_path.exists():
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(64, 384), nn.Tanh(), nn.Linear(384, 384), nn.Tanh(), nn.Linear(384, 10)
        )
        A.export(model, model_path, 64)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((512, 64)).astype(np.float32)
        A.save_npz(tmp_path / "heavy.npz", x, rng.integers(0, 10, 512).astype(np.int64))
    model_id = put(rt.blobs, "models", model_path, format="torch_export")
    data_id = put(rt.blobs, "datasets", tmp_path / "heavy.npz", format="npz")
    spec = JobSpec.model_validate(
        {
            "model": model_id,
            "dataset": {"id": data_id, "batch_size": 128},
            "measures": [{"name": name, "params": params}],
        }
    )
    return rt.store.create(spec, "cpu").id


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
    message acknowledged (never run again), and the next job runs in a new child.

    The child is stopped as soon as the record is running; on a machine so busy that the soft
    limit fired before that (the run failed with the soft limit's problem, a state of its
    own), the test tries again with limits twice as long: it waits for states, never for the
    worker to be fast."""
    import psutil

    for soft_s in (3, 6, 12, 24, 48, 96):
        hard_s = 2 * soft_s
        with started(
            redis_server,
            tmp_path,
            SHARPNESS_SOFT_TIME_LIMIT_S=str(soft_s),
            SHARPNESS_HARD_TIME_LIMIT_S=str(hard_s),
        ) as worker:
            job_id = trace_job(worker.rt, tmp_path, num_hvps=100_000)  # minutes of work
            send(worker.rt, job_id)
            _wait(worker, job_id, lambda j: j.status != JobStatus.queued, timeout_s=600)
            [child] = psutil.Process(worker.proc.pid).children()
            child.send_signal(signal.SIGSTOP)
            done = _wait(worker, job_id, lambda j: j.status.terminal, timeout_s=hard_s + 600)
            assert done.status == JobStatus.failed and done.attempts == 1, (done, worker.logs())
            if "soft time limit" in done.error.detail:  # the soft limit came first: too busy
                child.send_signal(signal.SIGCONT)
                continue
            assert "hard time limit" in done.error.detail, done.error
            assert f"{hard_s} s" in done.error.detail
            child.wait(timeout=120)  # killed, not left stopped
            assert worker.proc.poll() is None  # the main process lived on

            quick = trace_job(worker.rt, tmp_path, num_hvps=10)  # runs in a new child
            send(worker.rt, quick)
            ran = _wait(worker, quick, lambda j: j.status.terminal)
            assert ran.attempts == 1, (ran, worker.logs())
            if ran.status != JobStatus.succeeded:  # it ran, on a machine too busy for 3 s
                assert "soft time limit" in ran.error.detail, (ran.error, worker.logs())
            [new_child] = psutil.Process(worker.proc.pid).children()
            assert new_child.pid != child.pid
            again = worker.rt.store.get(job_id)  # acknowledged: never delivered again
            assert again.status == JobStatus.failed and again.attempts == 1
            assert again.finished_at == done.finished_at
            assert not worker.rt.store.r.exists(worker.rt.store.lock_key(job_id))
            return
    pytest.fail("the soft time limit fired before the child could be stopped every time")


def test_inspect_answers_while_a_cpu_heavy_job_runs(worker: Worker, tmp_path: Path) -> None:
    """The main process answers control commands while the child computes as hard as it can;
    the child runs at a lower priority than the main process."""
    import psutil

    params = {"method": "hutchinson", "num_hvps": LONG, "rtol": None}
    job_id = heavy_job(worker.rt, tmp_path, "trace", params)
    send(worker.rt, job_id)
    assert _wait(worker, job_id, _computing_or_ended).status == JobStatus.running
    main = psutil.Process(worker.proc.pid)
    [child] = main.children()
    assert child.nice() == main.nice() + CHILD_NICENESS
    app = make_celery(worker.rt.settings)
    for _ in range(3):
        replies = app.control.inspect(timeout=60, limit=1).active()  # the first reply
        assert replies is not None, worker.logs()
        [(node, active)] = replies.items()
        assert node == "prefork@test" and [t["id"] for t in active] == [job_id]
    worker.rt.store.request_cancel(job_id)
    assert _wait(worker, job_id, lambda j: j.status.terminal).status == JobStatus.cancelled


CANCEL_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "lambda_max": ("lambda_max", {"max_iter": 10_000, "tol": 1e-30}),
    "lambda_max per_layer": ("lambda_max", {"max_iter": 10_000, "tol": 1e-30, "per_layer": True}),
    "top_eigenvalues": ("top_eigenvalues", {"k": 5, "max_iter": 10_000, "tol": 1e-30}),
    "trace krylov": ("trace", {"method": "krylov", "num_hvps": 3_000, "rtol": None}),
    "trace hutchinson": ("trace", {"method": "hutchinson", "num_hvps": LONG, "rtol": None}),
    "frobenius": ("frobenius", {"num_hvps": LONG, "rtol": None}),
    "spectral_density": ("spectral_density", {"runs": 100, "steps": 300}),
    "adaptive_sharpness": ("adaptive_sharpness", {"iterations": 10_000}),
    "pacbayes_flatness": ("pacbayes_flatness", {"samples": 10_000}),
}


def test_a_cancel_stops_a_running_job_of_every_measure_kind(worker: Worker, tmp_path: Path) -> None:
    """Each job would compute for minutes; cancelled once its measure runs, it ends
    `cancelled` (asserted by state, not by time) and its Celery task is REVOKED."""
    app = make_celery(worker.rt.settings)
    for case, (name, params) in CANCEL_CASES.items():
        job_id = heavy_job(worker.rt, tmp_path, name, params)
        send(worker.rt, job_id, ignore_result=False)
        running = _wait(worker, job_id, lambda j, n=name: j.status.terminal or _measuring(j, n))
        assert running.status == JobStatus.running, (case, running)
        worker.rt.store.request_cancel(job_id)
        done = _wait(worker, job_id, lambda j: j.status.terminal)
        assert done.status == JobStatus.cancelled, (case, done.error)
        assert [a.outcome for a in done.attempt_history] == ["cancelled"], case
        deadline = time.monotonic() + 60
        while app.AsyncResult(job_id).state != states.REVOKED:
            assert time.monotonic() < deadline, (case, app.AsyncResult(job_id).state)
            time.sleep(0.1)

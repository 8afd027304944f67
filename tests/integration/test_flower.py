"""Real Flower (`celery -A tasks.app flower`) watching real prefork workers.

Flower builds its task list from the workers' task events (`/api/tasks`, `/api/task/info`,
the Tasks page) and reads task results from the result backend (`/api/task/result`). Every
task ends in its record's terminal status in both, and in the result backend itself
(`AsyncResult.state`): a failed job is a FAILURE, a cancelled one REVOKED (the worker sends a
task-revoked event, Celery sending none for Ignore), a succeeded one SUCCESS. So also after a
requeue: a worker SIGKILLed mid-run, its job requeued by the survivor's sweep and finished (or
failed) there, ends on the survivor, not on the lost worker's last STARTED; and a paused
worker's stale run that wakes after it was replaced sends nothing and writes nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tasks.app import RUN_JOB_TASK, make_celery
from tasks.contract.spec import JobStatus
from tasks.settings import Settings
from tasks.store.local_redis import PrivateRedis, free_port
from tasks.worker.runtime import WorkerRuntime
from tests import databases
from tests.processes import ROOT, spawn_worker, stop, worker_env
from tests.worker.trace_jobs import send, trace_job

pytestmark = pytest.mark.integration

DB = databases.FLOWER  # events too: Redis fanout channels carry the database number
WORKER = "flower@test"
STANDBY = "standby@test"
STATES = {JobStatus.succeeded: "SUCCESS", JobStatus.failed: "FAILURE"}


@dataclass
class Service:
    worker: subprocess.Popen
    flower: subprocess.Popen
    url: str  # Flower's
    rt: WorkerRuntime
    logs_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    others: list[subprocess.Popen] = field(default_factory=list)  # more workers, while alive
    worker_killed: bool = False  # a test killed `worker` on purpose (it is started again)

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
            alive = [self.flower, *self.others] + ([] if self.worker_killed else [self.worker])
            for proc in alive:
                assert proc.poll() is None, f"a process exited\n{self.logs()}"
            try:
                value = what()
            except (httpx.HTTPError, AssertionError) as exc:
                value = exc
            if not isinstance(value, Exception) and ok(value):
                return value
            assert time.monotonic() < deadline, f"last: {value!r}\n{self.logs()}"
            time.sleep(0.25)


@contextmanager
def _flower_and_worker(url: str, tmp_path: Path) -> Iterator[Service]:
    """Flower and one worker (WORKER) on Redis database `url`, files under `tmp_path`."""
    env = worker_env(url, tmp_path, SHARPNESS_WORKER_NAME=WORKER)
    port = free_port()
    started: list[subprocess.Popen] = []
    s: Service | None = None
    try:
        # Flower first: it sees only the events sent after its receiver is bound
        with (tmp_path / "flower.log").open("ab") as out:
            flower = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tasks.app", "flower"]
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
        s = Service(worker, flower, f"http://127.0.0.1:{port}", rt, tmp_path, env)
        # Flower answers and has the worker's events (online, heartbeats): it is listening
        s.poll(lambda: s.api("/api/workers?status=true"), lambda w: w.get(WORKER), 90)
        yield s
    finally:
        for proc in reversed(started):
            stop(proc, timeout_s=30)
        if s is not None and s.worker not in started:  # restarted by a test
            stop(s.worker, timeout_s=30)


@pytest.fixture(scope="module")
def service(
    redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    redis.Redis.from_url(url).flushdb()
    with _flower_and_worker(url, tmp_path_factory.mktemp("flower")) as s:
        yield s


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


# ------------------------------------------------------------------------- after requeues
def _pids(proc: subprocess.Popen) -> list[int]:
    """A worker's main process and its pool child."""
    import psutil

    return [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@contextmanager
def _beside_a_standby(s: Service) -> Iterator[dict[str, subprocess.Popen]]:
    """A second worker, STANDBY, beside the module's; yields both by name. Afterwards the
    standby stops, and the module's worker is started again if a test killed it."""
    standby = spawn_worker({**s.env, "SHARPNESS_WORKER_NAME": STANDBY}, s.logs_dir / "standby.log")
    s.others.append(standby)
    try:
        s.poll(lambda: s.rt.store.worker_alive(STANDBY), bool, 120)
        yield {WORKER: s.worker, STANDBY: standby}
    finally:
        s.others = [p for p in s.others if p is not standby]
        stop(standby, timeout_s=30)
        if s.worker_killed:  # the next tests need it
            s.worker = spawn_worker(s.env, s.logs_dir / "worker.log")
            s.worker_killed = False
            s.poll(lambda: s.rt.store.worker_alive(WORKER), bool, 120)


def _log_of(s: Service, worker: str) -> Path:
    return s.logs_dir / ("worker.log" if worker == WORKER else "standby.log")


def _running_job(s: Service, tmp_path: Path) -> tuple[str, str]:
    """A long trace job, computing on one of the two workers: (job id, that worker)."""
    job_id = trace_job(s.rt, tmp_path, num_hvps=100_000)  # minutes: it never ends on its own
    send(s.rt, job_id)
    first = _wait(
        s, job_id, lambda j: j.status == JobStatus.running and j.progress["trace"].iteration
    )
    return job_id, first.worker


def _ends_as(s: Service, job_id: str, status: JobStatus, worker: str) -> None:
    """Flower's task list, Flower's result API and the result backend all say `status`, and
    Flower's task list names `worker`, the one that finished the record."""
    state = STATES[status]
    info = s.poll(
        lambda: s.api(f"/api/task/info/{job_id}"),
        lambda t: t["state"] == state and t["worker"] == worker,
        60,
    )
    assert info["name"] == RUN_JOB_TASK, info
    result = s.poll(lambda: s.api(f"/api/task/result/{job_id}"), lambda r: r["state"] == state, 30)
    assert result["task-id"] == job_id, result
    assert make_celery(s.rt.settings).AsyncResult(job_id).state == state
    listed = s.api(f"/api/tasks?state={state}&workername={worker}")
    assert job_id in listed, listed


@pytest.mark.parametrize("second", [JobStatus.succeeded, JobStatus.failed])
def test_a_killed_workers_job_ends_on_the_worker_that_finished_it(
    service: Service, tmp_path: Path, second: JobStatus
) -> None:
    """SIGKILL the worker computing a job (its main process and child): the survivor's sweep
    requeues it, the survivor runs it again and it succeeds, or fails on that second attempt
    (its model deleted meanwhile). Flower and the backend say so, on the survivor."""
    s = service
    with _beside_a_standby(s) as workers:
        job_id, victim = _running_job(s, tmp_path)
        if second == JobStatus.failed:
            s.rt.blobs.delete("models", s.rt.store.get(job_id).spec.model)
        else:  # a shorter second run: the first attempt's progress is not kept anyway
            s.rt.store.set_fields(job_id, spec=_short(s.rt.store.get(job_id).spec))
        s.others = [p for p in s.others if p is not workers[victim]]
        s.worker_killed = victim == WORKER
        dead = _pids(workers[victim])
        _signal(dead, signal.SIGKILL)
        workers[victim].wait()
        done = _wait(s, job_id, lambda j: j.status.terminal, 300)
        survivor = STANDBY if victim == WORKER else WORKER
        assert done.status == second, done.error
        assert [(a.worker, a.outcome) for a in done.attempt_history] == [
            (victim, "worker-lost"),
            (survivor, second.value),
        ]
        assert done.worker == survivor
        _ends_as(s, job_id, second, survivor)


def _short(spec: object) -> str:
    """The spec with a trace of 200 products: a rerun that ends within seconds."""
    raw = spec.model_dump(mode="json")  # type: ignore[attr-defined]
    raw["measures"][0]["params"]["num_hvps"] = 200
    return type(spec).model_validate(raw).model_dump_json()  # type: ignore[attr-defined]


def test_a_stale_run_that_wakes_after_it_was_replaced_sends_nothing(
    service: Service, tmp_path: Path
) -> None:
    """SIGSTOP the worker computing a job past its heartbeat: the survivor requeues it and its
    second attempt fails (the model was deleted). SIGCONT: the woken run finds its record
    another's and ends in Ignore: no task-succeeded, no result; Flower and the backend keep
    the survivor's FAILURE."""
    s = service
    with _beside_a_standby(s) as workers:
        job_id, victim = _running_job(s, tmp_path)
        s.rt.blobs.delete("models", s.rt.store.get(job_id).spec.model)
        paused = _pids(workers[victim])
        _signal(paused, signal.SIGSTOP)
        try:
            done = _wait(s, job_id, lambda j: j.status.terminal, 300)
        finally:
            _signal(paused, signal.SIGCONT)
        survivor = STANDBY if victim == WORKER else WORKER
        assert done.status == JobStatus.failed and done.worker == survivor, done
        log = _log_of(s, victim)
        # the woken run notices at its next progress write and stops; its task's end, logged
        s.poll(lambda: _task_end(log, job_id), bool, 120)
        assert _task_end(log, job_id) == ["ignored"]  # no success, no failure of its own
        assert s.rt.store.get(job_id) == done  # it wrote nothing
        _ends_as(s, job_id, JobStatus.failed, survivor)


def _task_end(log: Path, task_id: str) -> list[str]:
    """How a worker's log says its runs of `task_id` ended (succeeded, raised, ignored)."""
    ends = ("succeeded", "raised", "ignored")
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if f"[{task_id}]" in ln]
    return [e for ln in lines for e in ends if f"[{task_id}] {e}" in ln]


def test_runs_ended_without_a_run_end_in_their_records_status(
    service: Service, tmp_path: Path
) -> None:
    """Records ended by another process than a run: the sweep fails a lost run whose attempts
    are spent and cancels one whose cancel was asked (FAILURE, REVOKED, sent by the sweeping
    worker: no worker runs them again to say so), and a job cancelled while queued is REVOKED
    once a worker takes its message (not the SUCCESS of a skipped run)."""
    s = service
    spent, cancelled = (trace_job(s.rt, tmp_path, num_hvps=10) for _ in range(2))
    for job_id in (spent, cancelled):  # running on a worker that died: no lock, no heartbeat
        s.rt.store.set_fields(job_id, attempts=2)
        s.rt.store.mark_running(job_id, "dead@test", "cpu", {})
    s.rt.store.set_fields(cancelled, cancel_requested=1)
    queued = trace_job(s.rt, tmp_path, num_hvps=10)
    s.rt.store.request_cancel(queued)
    send(s.rt, queued)

    assert _wait(s, spent, lambda j: j.status.terminal).status == JobStatus.failed
    assert _wait(s, cancelled, lambda j: j.status.terminal).status == JobStatus.cancelled
    info = s.poll(lambda: s.api(f"/api/task/info/{spent}"), lambda t: t["state"] == "FAILURE", 60)
    assert info["worker"] == WORKER and "Worker lost" in info["exception"], info
    for job_id, state in ((spent, "FAILURE"), (cancelled, "REVOKED"), (queued, "REVOKED")):
        _everywhere(s, job_id, state)


def _everywhere(s: Service, job_id: str, state: str) -> None:
    """Flower's task list, Flower's result API and the result backend all say `state`."""
    s.poll(lambda: s.api(f"/api/task/info/{job_id}"), lambda t: t["state"] == state, 60)
    s.poll(lambda: s.api(f"/api/task/result/{job_id}"), lambda r: r["state"] == state, 30)
    assert make_celery(s.rt.settings).AsyncResult(job_id).state == state


def test_after_a_redis_restart_tasks_end_in_their_records_status(tmp_path: Path) -> None:
    """Redis stops for a few seconds while a job computes (Flower, the worker and its run all
    lose their connections): the run goes on in the same attempt. Flower reconnects on its own
    schedule and misses what is sent before (here it is held until the jobs ended, or 12 s):
    the job, cancelled at once, and a short job that runs then still end REVOKED and SUCCESS
    in Flower's task list (the worker sends their final events again after an outage,
    tasks.final_events), in its result API and in the backend."""
    server = PrivateRedis(tmp_path / "redis", aof=True).start()
    try:
        with _flower_and_worker(server.url, tmp_path) as s:
            long, _ = _running_job(s, tmp_path)
            short = trace_job(s.rt, tmp_path, num_hvps=10)
            os.kill(s.flower.pid, signal.SIGSTOP)  # a Flower that reconnects late, yet within
            # the outage plus 10 s of its end: as late as the worker's copies allow
            try:
                server.stop()  # SIGTERM: Redis writes its AOF and exits
                time.sleep(6)  # the outage
                server.start()
                back = time.monotonic()
                # before Flower is back: long's task-revoked (from the worker's child) and,
                # when it runs that soon, short's events (from the worker's main process)
                s.rt.store.request_cancel(long)
                send(s.rt, short)  # runs once long stopped (concurrency 1)
                while time.monotonic() < back + 12 and not all(
                    s.rt.store.get(j).status.terminal for j in (long, short)
                ):
                    time.sleep(0.25)
            finally:
                os.kill(s.flower.pid, signal.SIGCONT)
            assert _wait(s, long, lambda j: j.status.terminal, 120).status == JobStatus.cancelled
            assert _wait(s, short, lambda j: j.status.terminal, 120).status == JobStatus.succeeded
            assert s.rt.store.get(long).attempts == 1  # the outage cost no attempt
            _everywhere(s, long, "REVOKED")
            _ends_as(s, short, JobStatus.succeeded, WORKER)
    finally:
        server.stop()

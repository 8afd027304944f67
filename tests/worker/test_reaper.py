"""Reaping by heartbeat against a real Redis: which runs are lost, what the record keeps, and
that racing sweepers requeue a run once and a lost run's late writes are refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from tasks import reaper
from tasks.contract.spec import JobSpec, JobStatus, MeasureProgress
from tasks.settings import Settings
from tasks.store.local_redis import PrivateRedis
from tasks.store.records import JobStore
from tasks.store.trajectories import TrajectoryStore
from tests import databases

DB = databases.REAPER  # the sweep reads every running record in it


@pytest.fixture
def store(redis_server: PrivateRedis) -> Iterator[JobStore]:
    client = redis.Redis(port=redis_server.port, db=DB, decode_responses=True)
    client.flushdb()
    yield JobStore(client)
    client.flushdb()


class Sent(list):
    def __call__(self, task: str, record_id: str, queue: str) -> None:
        self.append((task, record_id, queue))


SETTINGS = Settings(max_attempts=2)


def _running(store: JobStore, worker: str = "w1@host") -> str:
    spec = JobSpec.model_validate(
        {"model": "a" * 64, "dataset": {"id": "b" * 64}, "measures": [{"name": "trace"}]}
    )
    job_id = store.create(spec, "cpu").id
    assert store.acquire(job_id, worker, 30)
    attempt = store.mark_running(job_id, worker, "cpu", {"python": "3"})
    store.set_progress(job_id, "trace", MeasureProgress(state="running", iteration=17))
    assert attempt == store.get(job_id).attempts
    return job_id


def _die(store: JobStore, job_id: str) -> None:
    """What a SIGKILL leaves once the lock and heartbeat expired: a running record, no lock."""
    store.r.delete(store.lock_key(job_id))


def test_a_live_run_is_left_alone(store: JobStore) -> None:
    job_id = _running(store)
    sent = Sent()
    assert reaper.sweep(store, SETTINGS, sent) == []  # lock held
    store.release(job_id)
    store.heartbeat("w1@host", "cpu", ttl_s=30)
    assert reaper.sweep(store, SETTINGS, sent) == []  # lock gone, heartbeat still fresh
    assert store.get(job_id).status == JobStatus.running and sent == []


def test_a_lost_run_is_requeued_with_its_attempt_recorded(store: JobStore) -> None:
    job_id = _running(store)
    _die(store, job_id)
    sent = Sent()
    [reaped] = reaper.sweep(store, SETTINGS, sent)
    assert (reaped.id, reaped.status, reaped.worker) == (job_id, JobStatus.queued, "w1@host")
    assert sent == [("sharpness.run_job", job_id, "cpu")]  # no broker message held: a new one
    job = store.get(job_id)
    assert job.status == JobStatus.queued and job.worker is None and job.started_at is None
    assert job.progress["trace"] == MeasureProgress()  # the dead run's progress dropped
    [attempt] = job.attempt_history
    assert (attempt.attempt, attempt.worker, attempt.outcome) == (1, "w1@host", "worker-lost")
    assert attempt.started_at is not None and attempt.ended_at >= attempt.started_at
    assert store.running_ids() == []

    # the next run is attempt 2; the lost run's late result is refused, the new one kept
    assert store.acquire(job_id, "w2@host", 30)
    assert store.mark_running(job_id, "w2@host", "cpu", {}) == 2
    assert not store.finish(job_id, JobStatus.failed, attempt=1)
    assert store.finish(job_id, JobStatus.succeeded, results={}, attempt=2)
    job = store.get(job_id)
    assert job.status == JobStatus.succeeded and job.attempts == 2
    assert [(a.attempt, a.worker, a.outcome) for a in job.attempt_history] == [
        (1, "w1@host", "worker-lost"),
        (2, "w2@host", "succeeded"),
    ]


def test_spent_attempts_fail_and_a_cancel_is_honoured(store: JobStore) -> None:
    spent = _running(store)
    store.r.hset(store.key(spent), "attempts", SETTINGS.max_attempts)
    cancelled = _running(store)
    store.request_cancel(cancelled)
    for job_id in (spent, cancelled):
        _die(store, job_id)
    sent = Sent()
    got = {r.id: r.status for r in reaper.sweep(store, SETTINGS, sent)}
    assert got == {spent: JobStatus.failed, cancelled: JobStatus.cancelled} and sent == []
    job = store.get(spent)
    assert job.error.type.endswith(":worker-lost") and "SHARPNESS_MAX_ATTEMPTS" in job.error.detail
    assert job.finished_at is not None and job.attempt_history[-1].outcome == "worker-lost"
    assert store.get(cancelled).status == JobStatus.cancelled


def test_racing_sweepers_requeue_once(store: JobStore) -> None:
    ids = [_running(store, f"w{i}@host") for i in range(5)]
    for job_id in ids:
        _die(store, job_id)
    sent = Sent()
    barrier = threading.Barrier(8)

    def sweep() -> None:
        barrier.wait()
        reaper.sweep(JobStore(redis.Redis(connection_pool=store.r.connection_pool)), SETTINGS, sent)

    threads = [threading.Thread(target=sweep) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r for _, r, _ in sent) == sorted(ids)  # one message per lost run
    for job_id in ids:
        job = store.get(job_id)
        assert job.status == JobStatus.queued and len(job.attempt_history) == 1


def test_a_lost_trajectory_starts_over(store: JobStore) -> None:
    from tasks.contract.spec import TrajectorySpec

    ts = TrajectoryStore(store.r)
    spec = TrajectorySpec.model_validate(
        {
            "checkpoints": [
                {"model": "a" * 64, "learning_rate": 0.1},
                {"model": "c" * 64, "learning_rate": 0.1},
            ],
            "dataset": {"id": "b" * 64},
        }
    )
    tid = ts.create(spec, "cpu").id
    ts.mark_running(tid, "w1@host", "cpu", {})
    ts.set_progress(tid, 0, MeasureProgress(state="done", iteration=40))
    sent = Sent()
    [reaped] = reaper.sweep(store, SETTINGS, sent)
    assert reaped.kind == "trajectory" and sent == [("sharpness.run_trajectory", tid, "cpu")]
    t = ts.get(tid)
    assert t.points == [] and t.progress[0] == MeasureProgress()
    assert t.attempt_history[0].outcome == "worker-lost" and t.status == JobStatus.queued


# ----------------------------------------------------------------------------- orphans
def _orphans(store: JobStore, sent: Sent) -> list[reaper.Reaped]:
    return reaper.orphans(store, SETTINGS, sent, force=True, grace_s=0.2)


def _queued(store: JobStore) -> str:
    spec = JobSpec.model_validate(
        {"model": "a" * 64, "dataset": {"id": "b" * 64}, "measures": [{"name": "trace"}]}
    )
    return store.create(spec, "cpu").id


def test_a_queued_record_without_a_message_is_sent_one(
    store: JobStore, redis_server: PrivateRedis
) -> None:
    """A record left queued with nothing in the broker (a Redis restarted without AOF, a
    message never sent) gets one; a queued record whose message waits is left alone."""
    from tasks.app import RUN_JOB_TASK, make_celery

    stranded, waiting = _queued(store), _queued(store)
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    make_celery(Settings(redis_url=url)).send_task(
        RUN_JOB_TASK, args=[waiting], task_id=waiting, queue="cpu", ignore_result=True
    )
    assert store.message_ids(["cpu", "gpu"]) == {waiting}
    sent = Sent()
    assert _orphans(store, sent) == []  # younger than the grace: not even a suspect
    time.sleep(0.3)
    assert _orphans(store, sent) == []  # seen once: a suspect, not yet an orphan
    time.sleep(0.3)
    [fixed] = _orphans(store, sent)
    assert (fixed.id, fixed.status) == (stranded, JobStatus.queued)
    assert sent == [("sharpness.run_job", stranded, "cpu")]
    assert store.get(stranded).status == JobStatus.queued


def test_a_running_record_with_nothing_behind_it_is_requeued(store: JobStore) -> None:
    """Its worker still beats, but no lock and no message: the attempt ended without a word."""
    job_id = _running(store)
    store.heartbeat("w1@host", "cpu", ttl_s=30)
    _die(store, job_id)
    sent = Sent()
    assert reaper.sweep(store, SETTINGS, sent) == []  # the worker is alive: not reaped
    _orphans(store, sent)
    time.sleep(0.3)
    [fixed] = _orphans(store, sent)
    assert (fixed.id, fixed.status) == (job_id, JobStatus.queued)
    assert sent == [("sharpness.run_job", job_id, "cpu")]
    assert store.get(job_id).attempt_history[-1].outcome == "worker-lost"


def test_a_run_with_its_lock_or_message_is_no_orphan(store: JobStore) -> None:
    locked = _running(store)  # lock held
    sent = Sent()
    _orphans(store, sent)
    time.sleep(0.3)
    assert _orphans(store, sent) == [] and sent == []
    assert store.get(locked).status == JobStatus.running


def test_after_a_redis_restart_runs_in_flight_are_spared_for_a_grace(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every lock and heartbeat expired while Redis was away; the runs that computed through
    the outage retake theirs within a heartbeat or two. Until then the sweep leaves the runs
    that started before Redis did alone, and reaps the others as usual."""
    server = PrivateRedis(tmp_path / "redis", aof=True).start()
    try:
        store = JobStore(redis.Redis(port=server.port, decode_responses=True))
        in_flight = _running(store)
        time.sleep(1.1)  # Redis' uptime counts whole seconds
        server.stop()
        server.start()
        store = JobStore(redis.Redis(port=server.port, decode_responses=True))
        _die(store, in_flight)
        after = _running(store, worker="w2@host")
        _die(store, after)
        sent = Sent()
        assert [r.id for r in reaper.sweep(store, SETTINGS, sent)] == [after]
        assert store.get(in_flight).status == JobStatus.running  # spared: its run may live

        monkeypatch.setattr(reaper, "restart_grace_s", lambda settings: 0.0)  # grace over
        assert [r.id for r in reaper.sweep(store, SETTINGS, sent)] == [in_flight]
        assert store.get(in_flight).status == JobStatus.queued
    finally:
        server.stop()

"""Fenced writes against a real Redis: every requeue, reap, claim and end moves a record's
epoch on, and every write a run makes with a stale epoch (its end, its progress, its partial
results, its hand-back) is refused; a run's link to Redis buffers its progress through an
outage and reads "not cancelled" meanwhile."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.contract.spec import (
    EigenvectorOverlap,
    JobSpec,
    JobStatus,
    MeasureProgress,
    TrajectoryPoint,
)
from tasks.store.local_redis import PrivateRedis
from tasks.store.records import JobStore
from tasks.store.trajectories import TrajectoryStore
from tasks.worker.run import StoreLink
from tasks.worker.runtime import WorkerRuntime
from tests.worker.records import queued_trajectory

SPEC = {"model": "a" * 64, "dataset": {"id": "b" * 64}, "measures": [{"name": "trace"}]}


def _queued(store: JobStore) -> str:
    return store.create(JobSpec.model_validate(SPEC), "cpu").id


def _progress(iteration: int) -> MeasureProgress:
    return MeasureProgress(state="running", iteration=iteration)


def test_every_claim_requeue_and_end_moves_the_epoch_on(rt: WorkerRuntime) -> None:
    store = rt.store
    job_id = _queued(store)
    assert store.epoch(job_id) == (JobStatus.queued, 0)
    assert store.claim(job_id, "w1@host", "cpu", {}) == (1, 1)
    assert store.claim(job_id, "w2@host", "cpu", {}) is None  # running: not claimed twice
    assert store.end_run(job_id, "worker-lost", attempt=1) == JobStatus.queued
    assert store.epoch(job_id) == (JobStatus.queued, 2)
    assert store.claim(job_id, "w2@host", "cpu", {}) == (2, 3)
    assert store.finish(job_id, JobStatus.succeeded, {}, only_if={JobStatus.running}, epoch=3)
    assert store.epoch(job_id) == (JobStatus.succeeded, 4)
    assert store.claim(job_id, "w3@host", "cpu", {}) is None  # ended: never claimed again


def test_a_requeued_runs_writes_are_all_refused(rt: WorkerRuntime) -> None:
    """The defect: requeued (same `attempts`, status queued), the old run's finish, progress
    and hand-back must change nothing, whatever status guard it passes."""
    store = rt.store
    job_id = _queued(store)
    attempt, epoch = store.claim(job_id, "w1@host", "cpu", {})
    assert store.set_progress(job_id, "trace", _progress(5), epoch)
    assert store.end_run(job_id, "worker-lost", attempt=attempt) == JobStatus.queued
    before = store.r.hgetall(store.key(job_id))

    assert not store.set_progress(job_id, "trace", _progress(99), epoch)
    assert not store.set_fields(job_id, epoch, results={"trace": {}})
    for only_if in (None, {JobStatus.queued}, {JobStatus.running}):
        assert not store.finish(
            job_id, JobStatus.failed, {"trace": {}}, only_if=only_if, attempt=attempt, epoch=epoch
        )
    assert store.end_run(job_id, "handed-back", epoch=epoch) is None
    assert store.r.hgetall(store.key(job_id)) == before  # not one field changed

    job = store.get(job_id)
    assert job.status == JobStatus.queued and job.attempts == 1
    assert [(a.attempt, a.outcome) for a in job.attempt_history] == [(1, "worker-lost")]


def test_a_replaced_runs_writes_are_refused_and_the_new_runs_kept(rt: WorkerRuntime) -> None:
    store = rt.store
    job_id = _queued(store)
    _, old = store.claim(job_id, "w1@host", "cpu", {})
    store.end_run(job_id, "worker-lost", attempt=1)
    _, new = store.claim(job_id, "w2@host", "cpu", {})
    assert store.set_progress(job_id, "trace", _progress(3), new)
    assert not store.set_progress(job_id, "trace", _progress(1_000), old)
    assert not store.finish(job_id, JobStatus.failed, only_if={JobStatus.running}, epoch=old)
    assert store.get(job_id).progress["trace"].iteration == 3
    assert store.finish(job_id, JobStatus.succeeded, {}, only_if={JobStatus.running}, epoch=new)
    assert not store.set_progress(job_id, "trace", _progress(4), new)  # ended: fenced too
    job = store.get(job_id)
    assert job.status == JobStatus.succeeded and job.attempts == 2
    assert [(a.attempt, a.worker, a.outcome) for a in job.attempt_history] == [
        (1, "w1@host", "worker-lost"),
        (2, "w2@host", "succeeded"),
    ]


def test_a_stale_trajectory_run_writes_no_partial_result(rt: WorkerRuntime) -> None:
    store = TrajectoryStore(rt.store.r)
    tid = queued_trajectory(store)
    _, epoch = store.claim(tid, "w1@host", "cpu", {})
    point = TrajectoryPoint(
        index=0,
        model="a" * 64,
        learning_rate=0.1,
        lambda_max=1.0,
        eigenvalues=[1.0],
        stability_ratio=0.05,
        beyond_edge=False,
        residual_bounds=[0.0],
        converged=True,
        iterations=3,
        hvps=3,
        seconds=0.1,
        dim=3,
    )
    assert store.add_point(tid, point, None, epoch)
    assert len(store.get(tid).points) == 1
    store.end_run(tid, "worker-lost", attempt=1)  # requeued: its points dropped
    second = point.model_copy(update={"index": 1, "model": "c" * 64})
    overlap = EigenvectorOverlap(
        start=0, end=1, top_overlap=1.0, subspace_overlap=1.0, principal_cosines=[1.0]
    )
    assert not store.add_point(tid, second, overlap, epoch)
    assert not store.reset_results(tid, epoch)
    assert not store.set_progress(tid, 1, _progress(2), epoch)
    t = store.get(tid)
    assert t.points == [] and t.overlaps == [] and t.status == JobStatus.queued


def test_the_reaper_and_a_cancel_move_the_epoch_on(rt: WorkerRuntime) -> None:
    store = rt.store
    job_id = _queued(store)
    _, epoch = store.claim(job_id, "w1@host", "cpu", {})
    store.request_cancel(job_id)  # running: only the flag
    assert store.epoch(job_id) == (JobStatus.running, epoch)
    assert store.end_run(job_id, "worker-lost", attempt=1) == JobStatus.cancelled
    assert store.epoch(job_id) == (JobStatus.cancelled, epoch + 1)
    assert not store.set_progress(job_id, "trace", _progress(7), epoch)

    queued = _queued(store)
    store.request_cancel(queued)  # queued: ended at once, a new epoch
    assert store.epoch(queued) == (JobStatus.cancelled, 1)


# ------------------------------------------------------------------ a Redis outage
@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis", aof=True).start()
    yield server
    server.stop()


def test_a_runs_link_keeps_its_latest_progress_through_an_outage(own_redis: PrivateRedis) -> None:
    store = JobStore.from_url(own_redis.url)
    job_id = _queued(store)
    _, epoch = store.claim(job_id, "w1@host", "cpu", {})
    link = StoreLink(store)
    assert link.progress(job_id, epoch, "trace", _progress(1))
    own_redis.stop()

    t0 = time.monotonic()
    for i in range(2, 50):  # the run goes on computing: no call holds it up
        assert link.progress(job_id, epoch, "trace", _progress(i))
        assert link.cancel_requested(job_id) is False  # cannot tell: not cancelled yet
    assert time.monotonic() - t0 < 5
    assert list(link.pending) == ["trace"] and link.pending["trace"].iteration == 49

    own_redis.start()
    link.away_until = 0.0  # as its away time later
    assert link.flush(job_id, epoch) and link.pending == {}
    assert store.get(job_id).progress["trace"].iteration == 49  # the latest won

    store.end_run(job_id, "worker-lost", attempt=1)  # requeued meanwhile: stale from now on
    assert not link.progress(job_id, epoch, "trace", _progress(50))
    assert store.get(job_id).progress["trace"].iteration == 0

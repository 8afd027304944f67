"""The worker process's own duties: queues it consumes, heartbeat, the run lock kept from the
child, the hard time limit, and no CUDA in the main process."""

from __future__ import annotations

import uuid

import pytest

from tasks.app import RUN_JOB_TASK, RUN_TRAJECTORY_TASK
from tasks.contract.spec import JobSpec, JobStatus
from tasks.settings import Settings
from tasks.store.trajectories import TrajectoryStore
from tasks.worker import process as worker
from tasks.worker.run import LockKeeper
from tasks.worker.runtime import WorkerRuntime, lock_ttl
from tests.worker.records import queued_trajectory


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


def test_heartbeat_announces_the_worker_and_its_queues(rt: WorkerRuntime) -> None:
    worker.Heartbeat(rt, queues=["cpu"]).beat()
    [me] = [w for w in rt.store.workers() if w["hostname"] == rt.hostname]
    assert me["queues"] == "cpu" and rt.store.worker_alive(rt.hostname)


def _running(rt: WorkerRuntime, store=None) -> tuple[str, int]:
    store = store or rt.store
    job_id = _job(rt)
    assert store.acquire(job_id, rt.hostname, 2)
    return job_id, store.mark_running(job_id, rt.hostname, "cpu", {})


def test_the_lock_keeper_refreshes_retakes_and_notices_a_takeover(rt: WorkerRuntime) -> None:
    job_id, attempt = _running(rt)
    keeper = LockKeeper(rt, rt.store, job_id)
    keeper.attempt = attempt
    keeper.keep()
    assert rt.store.r.ttl(rt.store.lock_key(job_id)) > 2  # refreshed to lock_ttl
    assert lock_ttl(rt.settings) >= 3

    rt.store.release(job_id)  # expired while Redis restarted: ours again, the run goes on
    keeper.keep()
    assert rt.store.lock_holder(job_id) == rt.hostname and not keeper.lost

    rt.store.release(job_id)  # reaped and taken by another worker: this run is lost
    assert rt.store.acquire(job_id, "other@host", 30)
    keeper.keep()
    assert keeper.lost and rt.store.lock_holder(job_id) == "other@host"


def test_two_threads_retaking_an_expired_lock_at_once_keep_the_run(rt: WorkerRuntime) -> None:
    """The keeper's thread and the computing thread (`owned`) both find the lock gone after a
    Redis restart: the one that retakes it second must see a lock that is its own again, not
    a takeover (the run was stopped and rerun as attempt 2)."""
    import threading

    job_id, attempt = _running(rt)
    keeper = LockKeeper(rt, rt.store, job_id)
    keeper.attempt = attempt
    for _ in range(30):
        rt.store.release(job_id)  # expired while Redis was away
        start = threading.Barrier(2)

        def retake(barrier: threading.Barrier = start) -> None:
            barrier.wait()
            keeper.keep()

        threads = [threading.Thread(target=retake) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not keeper.lost and rt.store.lock_holder(job_id) == rt.hostname


def test_a_requeued_record_is_not_retaken(rt: WorkerRuntime) -> None:
    job_id, attempt = _running(rt)
    keeper = LockKeeper(rt, rt.store, job_id)
    keeper.attempt = attempt
    rt.store.release(job_id)
    assert rt.store.end_run(job_id, "worker-lost", attempt=attempt) == JobStatus.queued
    keeper.keep()
    assert keeper.lost and rt.store.lock_holder(job_id) is None


def test_hard_time_limit_fails_the_record_and_frees_its_lock(rt: WorkerRuntime) -> None:
    """What the main process does when Celery killed the child past the hard limit."""
    job_id, _ = _running(rt)
    assert worker.on_hard_time_limit(rt, RUN_JOB_TASK, job_id)
    job = rt.store.get(job_id)
    assert job.status == JobStatus.failed and "hard time limit" in job.error.detail
    assert job.error.type.endswith(":time-limit") and rt.store.lock_holder(job_id) is None
    assert not worker.on_hard_time_limit(rt, RUN_JOB_TASK, job_id)  # finished once


def test_hard_time_limit_fails_a_trajectory(rt: WorkerRuntime) -> None:

    store = TrajectoryStore(rt.store.r)
    tid = queued_trajectory(store)
    store.mark_running(tid, rt.hostname, "cpu", {})
    assert worker.on_hard_time_limit(rt, RUN_TRAJECTORY_TASK, tid)
    done = store.get(tid)
    assert done.status == JobStatus.failed and "trajectory ran past the hard" in done.error.detail


def test_the_main_process_does_not_initialise_cuda() -> None:
    """describe_device answers without a CUDA context in the worker's main process."""
    import torch

    device, has_cuda = worker.describe_device()
    assert has_cuda == device.startswith("cuda") and not torch.cuda.is_initialized()


def test_a_run_woken_after_a_long_pause_checks_its_lock_before_writing(
    rt: WorkerRuntime,
) -> None:
    """SIGSTOP past the lock's life, reaped and run elsewhere, then SIGCONT: the first write
    of the woken run finds the record another's and writes nothing."""
    job_id, attempt = _running(rt)
    keeper = LockKeeper(rt, rt.store, job_id)
    keeper.attempt = attempt
    assert keeper.owned()
    rt.store.release(job_id)
    assert rt.store.end_run(job_id, "worker-lost", attempt=attempt) == JobStatus.queued
    assert rt.store.acquire(job_id, "other@host", 30)
    assert keeper.owned()  # its keeper thread would notice within a heartbeat
    keeper.kept_at -= 10 * rt.settings.heartbeat_s  # as after a long pause
    assert not keeper.owned() and keeper.lost


def test_a_soft_limit_at_or_past_the_hard_one_is_refused() -> None:
    """Celery arms the hard limit when the soft one fires: soft >= hard would leave a hung
    run alive until the soft limit, so the settings refuse it, naming both variables."""
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="SOFT_TIME_LIMIT_S.*HARD_TIME_LIMIT_S"):
        Settings(soft_time_limit_s=600, hard_time_limit_s=600)
    assert Settings(soft_time_limit_s=5, hard_time_limit_s=6).hard_time_limit_s == 6

"""Retention against a real Redis with a retention of about a second: an ended record, its
enqueue claim and its Idempotency-Key expire; queued and running records never do; the
indexes let go of expired ids; the gateway lists and counts only what it can read."""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tasks.contract.spec import JobSpec, JobStatus
from tasks.settings import Settings
from tasks.store.records import JobStore
from tasks.store.trajectories import TrajectoryStore

RETENTION_S = 1.0
QUEUES = ("gpu", "cpu")


def _spec() -> JobSpec:
    return JobSpec.model_validate(
        {"model": "a" * 64, "dataset": {"id": "d" * 64}, "measures": [{"name": "lambda_max"}]}
    )


def _wait_gone(store: JobStore, record_id: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while store.r.exists(store.key(record_id)):
        assert time.monotonic() < deadline, "the ended record did not expire"
        time.sleep(0.1)


def test_ended_records_expire_and_live_ones_stay(settings: Settings) -> None:
    store = JobStore.from_url(settings.redis_url)
    store.retention_s = RETENTION_S
    done = store.create(_spec(), "cpu", idempotency_key="key-done")
    assert store.mark_enqueued(done.id)
    attempt = store.mark_running(done.id, "w1", "cpu", {})
    assert store.r.pttl(store.key(done.id)) == -1  # running: no expiry
    assert store.finish(done.id, JobStatus.succeeded, results={}, attempt=attempt)
    cancelled = store.create(_spec(), "gpu")
    store.request_cancel(cancelled.id)
    queued = store.create(_spec(), "cpu", idempotency_key="key-queued")
    running = store.create(_spec(), "cpu")
    store.mark_running(running.id, "w1", "cpu", {})

    for ended in (done.id, cancelled.id):
        assert 0 < store.r.pttl(store.key(ended)) <= RETENTION_S * 1000
    assert 0 < store.r.pttl(f"{store.IDEM}key-done") <= RETENTION_S * 1000
    assert 0 < store.r.pttl(store._enqueued_key(done.id)) <= RETENTION_S * 1000
    assert store.view(QUEUES).by_status["succeeded"] == 1

    _wait_gone(store, done.id)
    _wait_gone(store, cancelled.id)
    assert store.get(done.id) is None and store.find_idempotent("key-done") is None
    assert not store.r.exists(store._enqueued_key(done.id))
    # the indexes let go of them as soon as they are read
    view = store.view(QUEUES)
    assert view.by_status == {
        "queued": 1,
        "running": 1,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert store.r.zscore(store.INDEX, done.id) is None
    assert store.r.zcard(store.ended_key()) == 0
    # live records carry no expiry however long they wait
    for live in (queued.id, running.id):
        assert store.r.pttl(store.key(live)) == -1
    assert store.r.ttl(f"{store.IDEM}key-queued") > RETENTION_S  # still the 24 h key
    assert store.find_idempotent("key-queued").id == queued.id  # type: ignore[union-attr]
    # a key reused after its record expired makes a new record
    again = store.create(_spec(), "cpu", idempotency_key="key-done")
    assert again.id != done.id


def test_a_requeued_run_does_not_expire(settings: Settings) -> None:
    store = JobStore.from_url(settings.redis_url)
    store.retention_s = RETENTION_S
    job = store.create(_spec(), "cpu")
    attempt = store.mark_running(job.id, "w1", "cpu", {})
    assert store.end_run(job.id, "worker-lost", attempt=attempt) == JobStatus.queued
    assert store.r.pttl(store.key(job.id)) == -1
    time.sleep(RETENTION_S + 0.2)
    assert store.view(QUEUES).queued == {"gpu": 0, "cpu": 1}


def test_trajectories_expire_too(settings: Settings) -> None:
    from tasks.contract.spec import TrajectorySpec

    store = TrajectoryStore(JobStore.from_url(settings.redis_url).r, retention_s=RETENTION_S)
    spec = TrajectorySpec.model_validate(
        {
            "checkpoints": [{"model": m * 64, "learning_rate": 0.1} for m in "bc"],
            "dataset": {"id": "d" * 64},
        }
    )
    t = store.create(spec, "cpu", idempotency_key="traj-key")
    store.finish(t.id, JobStatus.failed)
    _wait_gone(store, t.id)  # type: ignore[arg-type]
    assert store.find_idempotent("traj-key") is None
    assert store.view(QUEUES).by_status["failed"] == 0


def test_the_gateway_lists_and_counts_only_live_records(
    app: FastAPI, client: TestClient, settings: Settings
) -> None:
    """Records ended by a process with a short retention (a worker's SHARPNESS_RETENTION_DAYS)
    leave the gateway's listing, counts and metrics once they expire: the index holds each
    ended id until the time it expires, whatever the reader's own retention."""
    writer = JobStore.from_url(settings.redis_url)
    writer.retention_s = RETENTION_S
    kept = writer.create(_spec(), "cpu")
    gone = writer.create(_spec(), "cpu")
    writer.mark_running(gone.id, "w1", "cpu", {})
    writer.finish(gone.id, JobStatus.succeeded, results={})
    listed = client.get("/v1/jobs").json()["items"]
    assert {j["id"] for j in listed} == {kept.id, gone.id}
    assert app.state.jobs.retention_s > RETENTION_S  # the gateway keeps its default
    _wait_gone(writer, gone.id)
    assert [j["id"] for j in client.get("/v1/jobs").json()["items"]] == [kept.id]
    assert client.get("/v1/jobs", params={"status": "succeeded"}).json()["items"] == []
    assert client.get(f"/v1/jobs/{gone.id}").status_code == 404
    body = client.get("/v1/queue").json()
    assert body["jobs_by_status"]["succeeded"] == 0 and body["jobs_by_status"]["queued"] == 1
    text = client.get("/metrics").text
    assert 'sharpness_jobs{status="succeeded"} 0.0' in text
    # the counter of ended runs is not a record count: it keeps the run
    assert 'sharpness_runs_ended_total{kind="job",outcome="succeeded",queue="cpu"} 1.0' in text


def test_a_record_that_runs_again_loses_its_expiry(settings: Settings) -> None:
    """A worker that took the message just before a cancel ended the record marks it running
    (it then sees the cancel and stops): while it runs, the record must not expire."""
    store = JobStore.from_url(settings.redis_url)
    store.retention_s = RETENTION_S
    job = store.create(_spec(), "cpu")
    store.request_cancel(job.id)
    assert store.r.pttl(store.key(job.id)) > 0
    store.mark_running(job.id, "w1", "cpu", {})
    assert store.r.pttl(store.key(job.id)) == -1
    assert store.r.zscore(store.ended_key(), job.id) is None
    time.sleep(RETENTION_S + 0.2)
    assert store.get(job.id).status == JobStatus.running  # type: ignore[union-attr]
    assert store.finish(job.id, JobStatus.cancelled)
    assert 0 < store.r.pttl(store.key(job.id)) <= RETENTION_S * 1000

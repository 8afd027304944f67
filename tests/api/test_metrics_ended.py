"""Metrics of ended runs, stored in Redis by the store as each run ends: counters by kind and
outcome (and celery-exporter's names), run-time and queue-wait histograms with the right
buckets, worker up per worker. Two gateway apps on one Redis answer the same numbers."""

from __future__ import annotations

import re
import time
from datetime import timedelta

from fastapi.testclient import TestClient

from service.main import create_app
from tasks.contract.spec import JobSpec, JobStatus, TrajectorySpec
from tasks.settings import Settings
from tasks.store.records import JobStore, now
from tasks.store.trajectories import TrajectoryStore


def _spec() -> JobSpec:
    return JobSpec.model_validate(
        {"model": "a" * 64, "dataset": {"id": "d" * 64}, "measures": [{"name": "lambda_max"}]}
    )


def _traj_spec() -> TrajectorySpec:
    return TrajectorySpec.model_validate(
        {
            "checkpoints": [{"model": m * 64, "learning_rate": 0.1} for m in "bc"],
            "dataset": {"id": "d" * 64},
        }
    )


def _samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value for every sample line, process_* (per process) left out."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "process_")):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def _run(store: JobStore | TrajectoryStore, queue: str, waited_s: float, ran_s: float, end):
    """A record created `waited_s + ran_s` ago, started `ran_s` ago, then ended by `end`."""
    record = store.create(_spec() if isinstance(store, JobStore) else _traj_spec(), queue)
    created = now() - timedelta(seconds=waited_s + ran_s)
    store.set_fields(record.id, created_at=created.isoformat())
    attempt = store.mark_running(record.id, "w1", "cpu", {})
    started = now() - timedelta(seconds=ran_s)
    store.set_fields(record.id, started_at=started.isoformat())
    end(record.id, attempt)
    return record.id


def test_ended_runs_counted_and_observed(client: TestClient, settings: Settings) -> None:
    jobs = JobStore.from_url(settings.redis_url)
    trajectories = TrajectoryStore(jobs.r)

    def succeed(store):
        return lambda rid, a: store.finish(rid, JobStatus.succeeded, results={}, attempt=a)

    _run(jobs, "cpu", 3, 42, succeed(jobs))  # run 42 s: bucket 60; wait 3 s: bucket 5
    _run(jobs, "cpu", 0.2, 0.5, succeed(jobs))  # bucket 1; wait bucket 0.5
    _run(jobs, "gpu", 1, 10, lambda rid, a: jobs.finish(rid, JobStatus.failed, attempt=a))
    _run(
        jobs,
        "cpu",
        0.8,
        2,
        lambda rid, a: jobs.end_run(rid, "worker-lost", attempt=a, max_attempts=1),
    )  # the reaper fails it: a failed run too
    _run(trajectories, "cpu", 1, 700, succeed(trajectories))
    cancelled = jobs.create(_spec(), "gpu")
    jobs.request_cancel(cancelled.id)  # never started: counted, not observed

    m = _samples(client.get("/metrics").text)
    ended = 'sharpness_runs_ended_total{kind="%s",outcome="%s",queue="%s"}'
    assert m[ended % ("job", "succeeded", "cpu")] == 2
    assert m[ended % ("job", "failed", "gpu")] == 1
    assert m[ended % ("job", "failed", "cpu")] == 1
    assert m[ended % ("job", "cancelled", "gpu")] == 1
    assert m[ended % ("trajectory", "succeeded", "cpu")] == 1
    assert m[ended % ("trajectory", "failed", "cpu")] == 0
    celery = '%s{name="%s",queue_name="%s"}'
    assert m[celery % ("celery_task_succeeded_total", "sharpness.run_job", "cpu")] == 2
    assert m[celery % ("celery_task_failed_total", "sharpness.run_job", "gpu")] == 1
    assert m[celery % ("celery_task_revoked_total", "sharpness.run_job", "gpu")] == 1
    assert m[celery % ("celery_task_succeeded_total", "sharpness.run_trajectory", "cpu")] == 1

    run = "sharpness_run_duration_seconds_bucket"
    labels = 'outcome="succeeded",queue="cpu"'
    les = ("1.0", "30.0", "60.0", "+Inf")
    got = [m[f'{run}{{kind="job",le="{le}",{labels}}}'] for le in les]
    assert got == [1, 1, 2, 2]
    total = m['sharpness_run_duration_seconds_sum{kind="job",outcome="succeeded",queue="cpu"}']
    assert abs(total - 42.5) < 1.0
    wait = 'sharpness_queue_wait_seconds_bucket{kind="job",le="%s",queue="cpu"}'
    assert [m[wait % le] for le in ("0.1", "0.5", "1.0", "5.0", "+Inf")] == [0, 1, 2, 3, 3]
    assert m['sharpness_queue_wait_seconds_count{kind="job",queue="gpu"}'] == 1  # failed one
    traj = [m[f'{run}{{kind="trajectory",le="{le}",{labels}}}'] for le in ("600.0", "1800.0")]
    assert traj == [0, 1]
    runtime = 'celery_task_runtime_bucket{le="60.0",name="sharpness.run_job",queue_name="cpu"}'
    assert m[runtime] == 2


def test_a_requeued_run_waits_from_creation_to_its_first_start(
    client: TestClient, settings: Settings
) -> None:
    jobs = JobStore.from_url(settings.redis_url)
    job_id = _run(
        jobs, "cpu", 20, 1, lambda rid, a: jobs.end_run(rid, "worker-lost", attempt=a)
    )  # requeued: not ended, nothing observed yet
    text = client.get("/metrics").text
    assert 'sharpness_queue_wait_seconds_count{kind="job",queue="cpu"} 0.0' in text
    attempt = jobs.mark_running(job_id, "w2", "cpu", {})
    jobs.finish(job_id, JobStatus.succeeded, results={}, attempt=attempt)
    m = _samples(client.get("/metrics").text)
    wait = 'sharpness_queue_wait_seconds_bucket{kind="job",le="%s",queue="cpu"}'
    assert (m[wait % "15.0"], m[wait % "60.0"]) == (0, 1)  # 20 s before the first start


def test_worker_up_and_active_per_worker(client: TestClient, settings: Settings) -> None:
    jobs = JobStore.from_url(settings.redis_url)
    jobs.heartbeat("alive@host", "cpu", ttl_s=30)
    jobs.heartbeat("dying@host", "cpu", ttl_s=1)
    jobs.heartbeat("stopped@host", "cpu", ttl_s=30)
    jobs.forget_worker("stopped@host")  # a clean stop leaves the list
    job = jobs.create(_spec(), "cpu")
    jobs.mark_running(job.id, "alive@host", "cpu", {})
    time.sleep(1.3)
    m = _samples(client.get("/metrics").text)
    assert m['celery_worker_up{hostname="alive@host"}'] == 1
    assert m['celery_worker_up{hostname="dying@host"}'] == 0  # reported down, not dropped
    assert 'celery_worker_up{hostname="stopped@host"}' not in m
    assert m['celery_worker_tasks_active{hostname="alive@host"}'] == 1
    assert m['celery_worker_tasks_active{hostname="dying@host"}'] == 0
    assert m["sharpness_workers_online"] == 1
    assert [w["hostname"] for w in client.get("/v1/queue").json()["workers"]] == ["alive@host"]


def test_two_gateways_answer_the_same(client: TestClient, settings: Settings) -> None:
    jobs = JobStore.from_url(settings.redis_url)
    jobs.heartbeat("w1", "cpu")
    for i in range(5):
        job = jobs.create(_spec(), "cpu" if i % 2 else "gpu")
        if i % 2:
            attempt = jobs.mark_running(job.id, "w1", "cpu", {})
            jobs.finish(job.id, JobStatus.succeeded, results={}, attempt=attempt)
    with TestClient(create_app(settings)) as other:
        a, b = _samples(client.get("/metrics").text), _samples(other.get("/metrics").text)
    ages = re.compile(r"age_seconds")  # read at different instants
    assert {k: v for k, v in a.items() if not ages.search(k)} == {
        k: v for k, v in b.items() if not ages.search(k)
    }
    assert a['sharpness_jobs{status="succeeded"}'] == 2

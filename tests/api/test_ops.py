"""Operations endpoints: /v1/queue, /healthz, /readyz, /metrics, with no worker running."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.main import create_app
from tasks.contract.spec import JobStatus
from tasks.settings import Settings
from tasks.store.records import JobStore
from tests.api.checks import assert_problem


def _submit(client: TestClient, model_id: str, dataset_id: str, device: str = "cpu") -> str:
    r = client.post(
        "/v1/jobs",
        json={
            "model": model_id,
            "dataset": {"id": dataset_id},
            "measures": [{"name": "lambda_max"}],
            "device": device,
        },
    )
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_queue_counts_waiting_messages(
    client: TestClient, model_id: str, dataset_id: str, app
) -> None:
    empty = client.get("/v1/queue").json()
    assert {q["name"]: q["waiting"] for q in empty["queues"]} == {"gpu": 0, "cpu": 0}
    assert empty["oldest_queued_age_s"] is None and empty["workers"] == []

    for _ in range(2):
        _submit(client, model_id, dataset_id, "cpu")
    _submit(client, model_id, dataset_id, "cuda")
    body = client.get("/v1/queue").json()
    queues = {q["name"]: q for q in body["queues"]}
    assert queues["cpu"]["waiting"] == 2 and queues["gpu"]["waiting"] == 1
    assert queues["cpu"]["queued_jobs"] == 2 and queues["gpu"]["queued_jobs"] == 1
    assert queues["cpu"]["reserved"] == 0
    assert body["jobs_by_status"]["queued"] == 3
    assert body["oldest_queued_age_s"] >= 0
    assert queues["cpu"]["oldest_queued_age_s"] >= queues["gpu"]["oldest_queued_age_s"]


def test_queue_counts_reserved_unacked(
    client: TestClient, model_id: str, dataset_id: str, app
) -> None:
    """A consumer takes the message without acknowledging it (as an acks_late worker does
    while the job runs): it moves from waiting to reserved, on the right queue."""
    job_id = _submit(client, model_id, dataset_id, "cuda")
    with app.state.celery.connection_for_read() as conn:
        channel = conn.channel()
        message = channel.basic_get("gpu", no_ack=False)
        assert message is not None and message.headers["id"] == job_id
        queues = {q["name"]: q for q in client.get("/v1/queue").json()["queues"]}
        assert queues["gpu"]["waiting"] == 0 and queues["gpu"]["reserved"] == 1
        assert queues["cpu"]["reserved"] == 0
        message.ack()
    queues = {q["name"]: q for q in client.get("/v1/queue").json()["queues"]}
    assert queues["gpu"]["reserved"] == 0


def test_queue_lists_workers_and_running(
    client: TestClient, model_id: str, dataset_id: str, settings: Settings
) -> None:
    store = JobStore.from_url(settings.redis_url)
    store.heartbeat("worker-1", "cuda:0")
    job_id = _submit(client, model_id, dataset_id)
    store.mark_running(job_id, "worker-1", "cuda:0", {})
    body = client.get("/v1/queue").json()
    assert [w["hostname"] for w in body["workers"]] == ["worker-1"]
    assert body["workers"][0]["device"] == "cuda:0" and 0 <= body["workers"][0]["age_s"] < 5
    assert [(r["id"], r["worker"]) for r in body["running"]] == [(job_id, "worker-1")]
    assert body["jobs_by_status"]["running"] == 1


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_healthz_needs_no_redis(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    with TestClient(create_app(down)) as c:
        assert c.get("/healthz").status_code == 200
        body = assert_problem(c.get("/readyz"), 503, "redis")
        assert body["type"].endswith("not-ready")
        assert_problem(c.get("/v1/queue"), 503, "Redis")
        assert "sharpness_redis_up 0.0" in c.get("/metrics").text


def test_readyz_needs_a_worker(client: TestClient, settings: Settings) -> None:
    body = assert_problem(client.get("/readyz"), 503, "workers", "no worker heartbeat")
    assert {e["check"] for e in body["errors"]} == {"redis", "workers", "queue:gpu", "queue:cpu"}
    JobStore.from_url(settings.redis_url).heartbeat("w", "cpu")
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["redis"] == "ok"


def test_metrics(client: TestClient, model_id: str, dataset_id: str, settings: Settings) -> None:
    store = JobStore.from_url(settings.redis_url)
    done = _submit(client, model_id, dataset_id)
    store.mark_running(done, "w", "cpu", {})
    store.finish(done, JobStatus.succeeded, results={})
    _submit(client, model_id, dataset_id)
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'sharpness_jobs{status="queued"} 1.0' in text
    assert 'sharpness_jobs{status="succeeded"} 1.0' in text
    assert 'sharpness_queue_depth{kind="job",queue="cpu"} 1.0' in text
    assert 'sharpness_broker_messages{queue="cpu",state="waiting"} 2.0' in text
    assert 'celery_queue_length{queue_name="cpu"} 2.0' in text
    assert "sharpness_workers_online 0.0" in text
    assert 'sharpness_runs_ended_total{kind="job",outcome="succeeded",queue="cpu"} 1.0' in text
    assert 'celery_task_succeeded_total{name="sharpness.run_job",queue_name="cpu"} 1.0' in text
    assert (
        'sharpness_run_duration_seconds_count{kind="job",outcome="succeeded",queue="cpu"} 1.0'
        in text
    )
    assert (
        'sharpness_run_duration_seconds_bucket{kind="job",le="1.0",outcome="succeeded",'
        'queue="cpu"} 1.0' in text
    )
    assert 'sharpness_queue_wait_seconds_count{kind="job",queue="cpu"} 1.0' in text
    assert "sharpness_oldest_queued_job_age_seconds" in text


def test_oldest_running_age(
    client: TestClient, model_id: str, dataset_id: str, settings: Settings
) -> None:
    """The stuck-run alert's gauge: per queue, the age of the longest run (0 when none)."""

    def ages() -> dict[str, float]:
        text = client.get("/metrics").text
        [family] = [
            f
            for f in text_string_to_metric_families(text)
            if f.name == "sharpness_oldest_running_age_seconds"
        ]
        return {s.labels["queue"]: s.value for s in family.samples}

    assert ages() == {"gpu": 0.0, "cpu": 0.0}
    store = JobStore.from_url(settings.redis_url)
    old, new = _submit(client, model_id, dataset_id), _submit(client, model_id, dataset_id)
    store.mark_running(old, "w", "cpu", {})
    store.mark_running(new, "w", "cpu", {})
    started = datetime.now(UTC) - timedelta(hours=2)
    store.set_fields(old, started_at=started.isoformat())
    got = ages()
    assert got["gpu"] == 0.0 and 7190 < got["cpu"] < 7300
    store.finish(old, JobStatus.succeeded, results={})
    assert ages()["cpu"] < 60

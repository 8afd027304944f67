"""/readyz per queue and the submit warning: which queues a live worker consumes, read from
the workers' heartbeats in the real Redis; one test runs a real `python -m tasks.worker`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from service.ops.consumers import ConsumedQueues, worker_queues
from tasks.settings import Settings
from tasks.store.records import JobStore
from tests import processes
from tests.api.checks import assert_problem


def _spec(model_id: str, dataset_id: str, device: str) -> dict:
    return {
        "model": model_id,
        "dataset": {"id": dataset_id},
        "measures": [{"name": "lambda_max"}],
        "device": device,
    }


def _beat(settings: Settings, host: str, device: str, queues: str | None = None) -> JobStore:
    """A worker's heartbeat as tasks.worker writes it (`queues` comma-separated); without
    `queues`, as a worker from before heartbeats carried them. Returns the store it is in."""
    store = JobStore.from_url(settings.redis_url)
    store.heartbeat(host, device, **({"queues": queues} if queues is not None else {}))
    return store


def test_queues_from_heartbeat_or_device() -> None:
    assert worker_queues({"device": "cpu"}) == (["cpu"], True)  # gpu needs CUDA
    assert worker_queues({"device": "cuda:0 NVIDIA H200"}) == (["gpu", "cpu"], False)
    assert worker_queues({"device": "cuda:0", "queues": "gpu"}) == (["gpu"], True)
    assert worker_queues({"device": "cuda:0", "queues": '["gpu", "cpu"]'}) == (
        ["gpu", "cpu"],
        True,
    )


def test_cuda_job_without_gpu_worker(
    client: TestClient, settings: Settings, model_id: str, dataset_id: str
) -> None:
    _beat(settings, "cpu-worker", "cpu", queues="cpu")

    r = client.post("/v1/jobs", json=_spec(model_id, dataset_id, "cuda"))
    assert r.status_code == 202, r.text
    warning = r.headers["Warning"]
    assert warning.startswith('199 - "') and "queue 'gpu'" in warning
    assert "device 'cuda'" in warning and "SHARPNESS_WORKER_QUEUES" in warning
    assert r.json()["status"] == "queued"  # recorded and queued all the same

    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text  # the gateway still serves: see readyz's doc
    checks = ready.json()["checks"]
    assert checks["queue:cpu"] == "ok: 1 live consumer"
    assert checks["queue:gpu"].startswith("no-consumer: 1 queued run wait, oldest")
    assert "no live worker consumes 'gpu'" in checks["queue:gpu"]

    r = client.post("/v1/jobs", json=_spec(model_id, dataset_id, "cpu"))
    assert r.status_code == 202 and "Warning" not in r.headers


def test_gpu_worker_consumes_gpu(
    client: TestClient, settings: Settings, model_id: str, dataset_id: str
) -> None:
    _beat(settings, "gpu-only", "cuda:0", queues="gpu")
    r = client.post("/v1/jobs", json=_spec(model_id, dataset_id, "cuda"))
    assert r.status_code == 202 and "Warning" not in r.headers
    r = client.post("/v1/jobs", json=_spec(model_id, dataset_id, "cpu"))
    assert "queue 'cpu'" in r.headers["Warning"]  # this worker said it consumes gpu only
    checks = client.get("/readyz").json()["checks"]
    assert checks["queue:gpu"] == "ok: 1 live consumer"
    assert checks["queue:cpu"].startswith("no-consumer: 1 queued run wait")

    _beat(settings, "gpu-default", "cuda:1")  # no queues in its heartbeat: gpu,cpu assumed
    checks = client.get("/readyz").json()["checks"]
    assert checks["queue:gpu"] == "ok: 2 live consumers (queues assumed from the device)"
    assert checks["queue:cpu"] == "ok: 1 live consumer (queues assumed from the device)"


def test_nothing_queued_and_stale_heartbeats(client: TestClient, settings: Settings) -> None:
    store = _beat(settings, "cpu-worker", "cpu")
    assert client.get("/readyz").json()["checks"]["queue:gpu"] == "no-consumer: nothing queued"

    # a heartbeat older than three periods no longer counts (the key outlives it here)
    old = (datetime.now(UTC) - timedelta(seconds=10 * settings.heartbeat_s + 60)).isoformat()
    store.r.hset(store._worker_key("cpu-worker"), "last_seen", old)
    body = assert_problem(client.get("/readyz"), 503, "workers", "no worker heartbeat")
    results = {e["check"]: e["result"] for e in body["errors"]}
    assert results["queue:cpu"] == "no-consumer: nothing queued"


def test_no_worker_at_all(
    client: TestClient, settings: Settings, model_id: str, dataset_id: str
) -> None:
    r = client.post("/v1/jobs", json=_spec(model_id, dataset_id, "cpu"))
    assert r.status_code == 202 and "queue 'cpu'" in r.headers["Warning"]
    body = assert_problem(client.get("/readyz"), 503, "workers")
    results = {e["check"]: e["result"] for e in body["errors"]}
    assert results["queue:cpu"].startswith("no-consumer: 1 queued run wait")


def test_idempotent_replay_of_a_running_job_warns_not(
    client: TestClient, settings: Settings, model_id: str, dataset_id: str
) -> None:
    headers = {"Idempotency-Key": "readyz-queues-1"}
    first = client.post("/v1/jobs", json=_spec(model_id, dataset_id, "cuda"), headers=headers)
    assert "Warning" in first.headers
    JobStore.from_url(settings.redis_url).mark_running(first.json()["id"], "w", "cuda:0", {})
    again = client.post("/v1/jobs", json=_spec(model_id, dataset_id, "cuda"), headers=headers)
    assert again.headers.get("Idempotent-Replayed") == "true" and "Warning" not in again.headers


def test_real_worker_heartbeat(
    client: TestClient, settings: Settings, model_id: str, dataset_id: str, tmp_path: Path
) -> None:
    """A real CPU worker process: its heartbeat makes `cpu` consumed and leaves `gpu` without
    a consumer, so a cuda job is answered with the warning."""
    env = processes.worker_env(
        settings.redis_url, settings.data_dir, SHARPNESS_WORKER_NAME="readyz-real-worker"
    )
    log = tmp_path / "worker.log"
    worker = processes.spawn_worker(env, log)
    try:
        store = JobStore.from_url(settings.redis_url)
        deadline = time.monotonic() + 120
        while not any(w["hostname"] == "readyz-real-worker" for w in store.workers()):
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        heartbeat = next(w for w in store.workers() if w["hostname"] == "readyz-real-worker")
        assert heartbeat["queues"] == "cpu" and worker_queues(heartbeat) == (["cpu"], True)

        checks = client.get("/readyz").json()["checks"]
        assert checks["queue:cpu"].startswith("ok: 1 live consumer")
        assert checks["queue:gpu"] == "no-consumer: nothing queued"
        r = client.post("/v1/jobs", json=_spec(model_id, dataset_id, "cuda"))
        assert r.status_code == 202 and "queue 'gpu'" in r.headers["Warning"]
        assert client.get("/readyz").json()["checks"]["queue:gpu"].startswith("no-consumer: 1")
    finally:
        processes.stop(worker)


def test_trajectory_submit_warns_too(
    client: TestClient, settings: Settings, model_id: str, dataset_id: str
) -> None:
    _beat(settings, "cpu-worker", "cpu")
    body = {
        "checkpoints": [{"model": model_id, "learning_rate": 0.1, "step": i} for i in range(2)],
        "dataset": {"id": dataset_id, "batch_size": 8},
        "device": "cuda",
    }
    r = client.post("/v1/trajectories", json=body)
    assert r.status_code == 202, r.text
    assert "queue 'gpu'" in r.headers["Warning"] and "device 'cuda'" in r.headers["Warning"]
    checks = client.get("/readyz").json()["checks"]
    assert checks["queue:gpu"].startswith("no-consumer: 1 queued run wait")  # trajectories count
    r = client.post("/v1/trajectories", json={**body, "device": "cpu"})
    assert r.status_code == 202 and "Warning" not in r.headers


def test_consumed_queues_read_once_per_ttl_while_consumed(settings: Settings) -> None:
    """The per-process cache behind the submit warning: a consumed queue is believed for
    `ttl_s` (the heartbeats are not read per submit), an unconsumed one is read every time,
    so the warning goes as soon as a worker beats and comes back within `ttl_s` of its
    heartbeat expiring."""
    store = JobStore.from_url(settings.redis_url)
    consumed = ConsumedQueues(ttl_s=0.5)
    assert not consumed.has_consumer(store, settings, "cpu")
    _beat(settings, "cache-worker", "cpu", queues="cpu")
    assert consumed.has_consumer(store, settings, "cpu")  # read again: not cached while absent
    assert not consumed.has_consumer(store, settings, "gpu")
    store.forget_worker("cache-worker")
    assert consumed.has_consumer(store, settings, "cpu")  # within ttl: believed, no read
    time.sleep(0.6)
    assert not consumed.has_consumer(store, settings, "cpu")

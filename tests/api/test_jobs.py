"""Job submission, reading, listing, idempotency and cancellation (no worker runs here: jobs
stay queued and their Celery messages wait in Redis)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from service.main import create_app, gateway_celery
from tasks.contract.spec import JobStatus
from tasks.settings import Settings
from tasks.store.records import JobStore
from tests.api import files
from tests.api.checks import assert_problem, assert_queued


def spec(model: str, dataset: str, **extra) -> dict:
    return {
        "model": model,
        "dataset": {"id": dataset, "batch_size": 8},
        "measures": [{"name": "lambda_max"}, {"name": "trace", "params": {"seed": 3}}],
        **extra,
    }


def test_submit_read_and_enqueue(
    client: TestClient, model_id: str, dataset_id: str, settings: Settings
) -> None:
    job = assert_queued(
        client, "/v1/jobs", spec(model_id, dataset_id, labels={"run": "a"}), settings
    )
    assert job["spec"]["measures"][1]["params"]["seed"] == 3  # defaults filled in beside it
    assert set(job["progress"]) == {"lambda_max", "trace"}


def test_cuda_jobs_go_to_gpu_queue(client: TestClient, model_id: str, dataset_id: str) -> None:
    r = client.post("/v1/jobs", json=spec(model_id, dataset_id, device="cuda"))
    assert r.json()["queue"] == "gpu"


def test_unknown_measure(client: TestClient, model_id: str, dataset_id: str) -> None:
    body = spec(model_id, dataset_id)
    body["measures"] = [{"name": "sharpest"}]
    problem = assert_problem(
        client.post("/v1/jobs", json=body), 422, "measures.0.name", "unknown measure 'sharpest'"
    )
    assert problem["errors"][0]["field"] == "measures.0.name"


def test_parameter_out_of_bounds(client: TestClient, model_id: str, dataset_id: str) -> None:
    body = spec(model_id, dataset_id)
    body["measures"] = [{"name": "top_eigenvalues", "params": {"k": 100000}}]
    problem = assert_problem(
        client.post("/v1/jobs", json=body),
        422,
        "measures.0.params.k: Input should be less than or equal to 200",
    )
    assert problem["errors"] == [
        {
            "field": "measures.0.params.k",
            "message": "Input should be less than or equal to 200",
            "type": "less_than_equal",
        }
    ]


def test_unknown_parameter(client: TestClient, model_id: str, dataset_id: str) -> None:
    body = spec(model_id, dataset_id)
    body["measures"] = [{"name": "lambda_max", "params": {"iters": 5}}]
    assert_problem(client.post("/v1/jobs", json=body), 422, "measures.0.params.iters")


def test_unknown_model_and_dataset(client: TestClient, model_id: str, dataset_id: str) -> None:
    missing = "0" * 64
    assert_problem(client.post("/v1/jobs", json=spec(missing, dataset_id)), 422, "model:")
    assert_problem(client.post("/v1/jobs", json=spec(model_id, missing)), 422, "dataset.id:")


def test_missing_array_key(client: TestClient, model_id: str, dataset_id: str) -> None:
    body = spec(model_id, dataset_id)
    body["dataset"]["targets_key"] = "labels"
    assert_problem(client.post("/v1/jobs", json=body), 422, "dataset.targets_key", "'labels'")


def test_malformed_json(client: TestClient) -> None:
    r = client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_problem(r, 422, "JSON")


def test_dataset_uri_rules(
    client: TestClient, model_id: str, data_root: Path, tmp_path: Path
) -> None:
    good = data_root / "d.npz"
    good.write_bytes(files.npz_bytes())

    def submit(uri: str):
        return client.post(
            "/v1/jobs",
            json={"model": model_id, "dataset": {"uri": uri}, "measures": [{"name": "trace"}]},
        )

    assert submit(good.as_uri()).status_code == 202
    assert_problem(submit("ftp://example.org/d.npz"), 422, "dataset.uri", "scheme 'ftp'")
    assert_problem(submit("https://example.org/d.npz"), 422, "dataset.uri", "scheme 'https'")
    assert_problem(
        submit(f"file://{data_root}/../../../etc/passwd"), 422, "dataset.uri", "traversal"
    )
    outside = tmp_path / "outside.npz"
    outside.write_bytes(files.npz_bytes())
    (data_root / "escape.npz").symlink_to(outside)
    assert_problem(
        submit((data_root / "escape.npz").as_uri()), 422, "dataset.uri", "outside the data root"
    )
    (data_root / "bad.npz").write_bytes(files.npz_bytes(inputs=np.zeros((3, 2), np.float32)))
    assert_problem(submit((data_root / "bad.npz").as_uri()), 422, "dataset.uri", "'targets'")


def test_exactly_one_dataset_source(client: TestClient, model_id: str, dataset_id: str) -> None:
    body = spec(model_id, dataset_id)
    body["dataset"]["uri"] = "file:///x.npz"
    assert_problem(client.post("/v1/jobs", json=body), 422, "dataset", "exactly one")


def test_idempotency_key(
    client: TestClient, model_id: str, dataset_id: str, settings: Settings
) -> None:
    headers = {"Idempotency-Key": "run-42"}
    first = client.post("/v1/jobs", json=spec(model_id, dataset_id), headers=headers)
    again = client.post("/v1/jobs", json=spec(model_id, dataset_id), headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert redis.Redis.from_url(settings.redis_url).llen("cpu") == 1  # enqueued once
    other = spec(model_id, dataset_id, labels={"x": "y"})
    assert_problem(client.post("/v1/jobs", json=other, headers=headers), 409, "Idempotency-Key")


def test_idempotency_recovers(
    app, client: TestClient, model_id: str, dataset_id: str, settings: Settings
) -> None:
    """A retry after a failed enqueue (503) enqueues; a replay answers the job made the first
    time even after its model was deleted."""
    from tasks.app import make_celery
    from tasks.store.local_redis import free_port

    headers = {"Idempotency-Key": "retry-after-503"}
    working = app.state.celery
    app.state.celery = make_celery(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        failed = client.post("/v1/jobs", json=spec(model_id, dataset_id), headers=headers)
    finally:
        app.state.celery = working
    assert_problem(failed, 503, "could not be enqueued")
    broker = redis.Redis.from_url(settings.redis_url)
    assert broker.llen("cpu") == 0

    retry = client.post("/v1/jobs", json=spec(model_id, dataset_id), headers=headers)
    [lost] = client.get("/v1/jobs", params={"status": "failed"}).json()["items"]
    assert lost["error"]["type"].endswith(":enqueue-failed")
    assert retry.status_code == 202 and retry.json()["id"] != lost["id"]
    assert retry.json()["status"] == "queued" and broker.llen("cpu") == 1

    # the queued job uses the model: a plain delete is refused (in-use), a forced one is not
    assert client.delete(f"/v1/models/{model_id}").status_code == 409
    forced = client.delete(f"/v1/models/{model_id}", params={"force": "true"})
    assert forced.status_code == 204
    replay = client.post("/v1/jobs", json=spec(model_id, dataset_id), headers=headers)
    assert replay.status_code == 202, replay.text
    assert replay.json()["id"] == retry.json()["id"]
    assert replay.headers["idempotent-replayed"] == "true" and broker.llen("cpu") == 1
    # without the key the deleted model is still refused
    assert_problem(client.post("/v1/jobs", json=spec(model_id, dataset_id)), 422, "model")


def test_list_filter_paginate(client: TestClient, model_id: str, dataset_id: str) -> None:
    ids = []
    for i in range(5):
        labels = {"sweep": "lr", "i": str(i)} if i % 2 == 0 else {"sweep": "wd"}
        r = client.post("/v1/jobs", json=spec(model_id, dataset_id, labels=labels))
        ids.append(r.json()["id"])
    everything = client.get("/v1/jobs").json()
    assert [j["id"] for j in everything["items"]] == ids[::-1]  # newest first
    lr = client.get("/v1/jobs", params={"label": "sweep:lr"}).json()["items"]
    assert {j["id"] for j in lr} == {ids[0], ids[2], ids[4]}
    both = client.get("/v1/jobs", params=[("label", "sweep:lr"), ("label", "i:2")]).json()
    assert [j["id"] for j in both["items"]] == [ids[2]]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params).json()
        assert len(page["items"]) <= 2
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    client.post(f"/v1/jobs/{ids[1]}/cancel")
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()["items"]
    assert [j["id"] for j in cancelled] == [ids[1]]
    assert_problem(client.get("/v1/jobs", params={"label": "nocolon"}), 422, "query.label")
    assert_problem(client.get("/v1/jobs", params={"cursor": "f" * 32}), 422, "query.cursor")
    assert_problem(client.get("/v1/jobs", params={"status": "done"}), 422, "query.status")
    assert_problem(client.get("/v1/jobs", params={"limit": 0}), 422, "query.limit")


def test_cancel(client: TestClient, model_id: str, dataset_id: str, settings: Settings) -> None:
    job = client.post("/v1/jobs", json=spec(model_id, dataset_id)).json()
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled" and r.json()["cancel_requested"] is True
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200  # again: no-op

    store = JobStore.from_url(settings.redis_url)
    running = client.post("/v1/jobs", json=spec(model_id, dataset_id)).json()
    store.acquire(running["id"], "w1", 30)  # a live worker holds the run lock
    store.mark_running(running["id"], "w1", "cpu", {})
    r = client.post(f"/v1/jobs/{running['id']}/cancel")
    assert r.status_code == 202
    assert r.json()["status"] == "running" and r.json()["cancel_requested"] is True

    # running, but its worker is gone (no lock, no heartbeat): cancelled at once
    orphan = client.post("/v1/jobs", json=spec(model_id, dataset_id)).json()
    store.mark_running(orphan["id"], "dead-worker", "cpu", {})
    r = client.post(f"/v1/jobs/{orphan['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert [a["outcome"] for a in r.json()["attempt_history"]] == ["worker-lost"]

    done = client.post("/v1/jobs", json=spec(model_id, dataset_id)).json()
    store.finish(done["id"], JobStatus.succeeded, results={})
    assert_problem(client.post(f"/v1/jobs/{done['id']}/cancel"), 409, "succeeded")


def test_unknown_job(client: TestClient) -> None:
    assert_problem(client.get(f"/v1/jobs/{'a' * 32}"), 404, "a" * 32)
    assert_problem(client.post(f"/v1/jobs/{'a' * 32}/cancel"), 404)
    assert_problem(client.get("/v1/jobs/zzz"), 422, "path.id")


def test_enqueue_failure_marks_job_failed(
    settings: Settings, model_id: str, dataset_id: str, pt2: bytes
) -> None:
    """The broker refuses the message (here: nothing listens where it points). The job is
    not left queued with no message: it is failed with the reason, and the client gets 503."""
    app = create_app(settings)
    dead = Settings(redis_url="redis://127.0.0.1:9/0", data_dir=settings.data_dir)
    app.state.celery = gateway_celery(dead)
    with TestClient(app) as c:
        t0 = time.monotonic()
        r = c.post("/v1/jobs", json=spec(model_id, dataset_id))
        assert time.monotonic() - t0 < 10  # gives up within seconds, never hangs
        problem = assert_problem(r, 503, "could not be enqueued")
        job_id = problem["detail"].split()[1]
        job = c.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"]["status"] == 503 and "enqueue" in job["error"]["type"]


@pytest.mark.parametrize("status", [405])
def test_wrong_method(client: TestClient, status: int) -> None:
    assert_problem(client.put("/v1/jobs"), status, "PUT")


def test_delete_job_and_uploads_in_use(client: TestClient, model_id: str, dataset_id: str) -> None:
    """DELETE /v1/jobs/{id}: 409 not-finished while queued, 204 once cancelled, then 404; a
    dataset a queued job uses: 409 in-use naming the job, 204 with ?force=true."""
    job_id = client.post("/v1/jobs", json=spec(model_id, dataset_id)).json()["id"]
    refused = client.delete(f"/v1/datasets/{dataset_id}")
    assert_problem(refused, 409, job_id)
    assert refused.json()["type"].endswith(":in-use") and "force=true" in refused.json()["detail"]
    early = client.delete(f"/v1/jobs/{job_id}")
    assert_problem(early, 409, "cancel it first")
    assert early.json()["type"].endswith(":not-finished")
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert_problem(client.get(f"/v1/jobs/{job_id}"), 404, job_id)
    assert client.get("/v1/jobs").json()["items"] == []  # gone from the indexes too
    assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 204  # nothing uses it
    assert_problem(client.delete(f"/v1/jobs/{'0' * 32}"), 404, "no job")
    bad = client.delete("/v1/jobs/xyz")
    assert_problem(bad, 422, "'xyz' is not a job id (32 hex characters)")

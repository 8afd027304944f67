"""`GET /v1/jobs/{id}/compare`: the answer's shape and its problems (404 unknown id, 409 not
finished, 422 nothing in common). No worker runs: results are written to the real job store
the way the worker writes them."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tasks.contract.spec import JobStatus
from tasks.settings import Settings
from tasks.store.records import JobStore
from tests.api.checks import assert_problem


def submit(client: TestClient, model_id: str, dataset_id: str, *measures: str) -> str:
    body = {
        "model": model_id,
        "dataset": {"id": dataset_id},
        "measures": [{"name": m} for m in measures],
    }
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def finish(store: JobStore, job_id: str, **results: dict[str, Any]) -> None:
    store.mark_running(job_id, "w1", "cpu", {})
    store.finish(job_id, JobStatus.succeeded, results=results)


def lam(value: float, err: float) -> dict[str, Any]:
    return {"value": value, "converged": True, "diagnostics": {"error_estimate": err}}


def url(job_id: str, baseline: str) -> str:
    return f"/v1/jobs/{job_id}/compare?baseline={baseline}"


def test_compare_two_finished_jobs(
    client: TestClient, model_id: str, dataset_id: str, settings: Settings
) -> None:
    store = JobStore.from_url(settings.redis_url)
    new, old = (submit(client, model_id, dataset_id, "lambda_max") for _ in range(2))
    finish(store, new, lambda_max=lam(15.0, 0.5))
    finish(store, old, lambda_max=lam(10.0, 0.5))
    r = client.get(url(new, old))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["job"], body["baseline"], body["caveats"]) == (new, old, [])
    (m,) = body["measures"]
    assert m["measure"] == "lambda_max" and m["ratio"] == 1.5 and m["difference"] == 5.0
    assert m["exceeds_error_bars"] is True and m["bounds"] == [14.5, 15.5]


def test_compare_problems(
    client: TestClient, model_id: str, dataset_id: str, settings: Settings
) -> None:
    store = JobStore.from_url(settings.redis_url)
    done = submit(client, model_id, dataset_id, "lambda_max")
    finish(store, done, lambda_max=lam(1.0, 0.1))
    unknown = "f" * 32
    assert_problem(client.get(url(unknown, done)), 404, "no job")
    assert_problem(client.get(url(done, unknown)), 404, f"baseline: no job {unknown}")
    queued = submit(client, model_id, dataset_id, "lambda_max")
    r = client.get(url(done, queued))
    assert_problem(r, 409, "baseline", "queued")
    assert r.json()["type"].endswith(":not-finished") and r.headers["Retry-After"]
    other = submit(client, model_id, dataset_id, "trace")
    finish(store, other, trace={"value": 3.0, "diagnostics": {"ci95": [2.0, 4.0]}})
    body = assert_problem(client.get(url(done, other)), 422, "no measure", "query.baseline")
    assert body["errors"][0]["field"] == "query.baseline"
    assert client.get(url(done, "not-an-id")).status_code == 422

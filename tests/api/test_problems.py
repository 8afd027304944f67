"""Every error is problem+json: framework errors, validation, oversize bodies, bugs."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sharpness_client.errors import NotFoundError, ValidationError, error_for
from tasks.contract.problem_types import NAMESPACE
from tasks.contract.spec import JobSpec, JobStatus, Problem
from tasks.settings import Settings
from tasks.store.records import JobStore
from tests.api.checks import assert_problem

MISSING = "a" * 32


def test_unknown_route_and_method(client: TestClient) -> None:
    assert_problem(client.get("/v2/nothing"), 404, "/v2/nothing")
    assert_problem(client.delete("/v1/measures"), 405, "DELETE")


def test_405_allows_every_method_of_the_path(client: TestClient) -> None:
    """/v1/jobs is served by two routes (GET lists, POST submits): Allow names both."""
    r = client.delete("/v1/jobs")
    assert_problem(r, 405, "DELETE", "allowed: GET, HEAD, POST")
    assert r.headers["allow"] == "GET, HEAD, POST"
    r = client.put("/v1/models/" + "a" * 64)
    assert set(r.headers["allow"].split(", ")) == {"DELETE", "GET", "HEAD"}


def test_validation_lists_every_error(client: TestClient) -> None:
    body = {"model": "nope", "dataset": {"id": "x" * 64}, "measures": [], "surprise": 1}
    problem = assert_problem(client.post("/v1/jobs", json=body), 422)
    fields = {e["field"] for e in problem["errors"]}
    assert {"model", "dataset.id", "measures", "surprise"} <= fields
    for field in fields:
        assert f"{field}: " in problem["detail"]


def test_declared_oversize_body_refused_before_reading(
    client: TestClient, settings: Settings
) -> None:
    settings.max_upload_bytes = 1000
    r = client.post(
        "/v1/datasets",
        content=b"x" * 10,
        headers={
            "Content-Type": "multipart/form-data; boundary=b",
            "Content-Length": str(10_000_000),
        },
    )
    assert_problem(r, 413, "10000000")


def test_unexpected_error_is_a_500_problem(app: FastAPI) -> None:
    def boom() -> None:
        raise RuntimeError("bug")

    app.add_api_route("/v1/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        problem = assert_problem(c.get("/v1/boom"), 500, "RuntimeError", "/v1/boom")
    assert "bug" not in problem["detail"]  # internals stay in the log


@pytest.mark.parametrize(
    ("path", "noun"),
    [
        (f"/v1/jobs/{MISSING}", "job"),
        (f"/v1/jobs/{MISSING}/plots/spectral_density.png", "job"),
        (f"/v1/trajectories/{MISSING}", "trajectory"),
        (f"/v1/trajectories/{MISSING}/plot.png", "trajectory"),
        (f"/v1/studies/{MISSING}", "study"),
        (f"/v1/models/{'b' * 64}", "model"),
        (f"/v1/datasets/{'b' * 64}", "dataset"),
    ],
)
def test_every_lookup_answers_the_same_404(client: TestClient, path: str, noun: str) -> None:
    """One dependency per kind of record: the same type and wording everywhere."""
    problem = assert_problem(client.get(path), 404)
    assert problem["type"] == NAMESPACE + "not-found"
    assert problem["detail"] == f"id: no {noun} {path.split('/')[3]}"
    assert problem["instance"] == path


def test_cancel_of_an_unknown_record_is_a_404(client: TestClient) -> None:
    for kind in ("jobs", "trajectories"):
        problem = assert_problem(client.post(f"/v1/{kind}/{MISSING}/cancel"), 404, MISSING)
        assert problem["type"] == NAMESPACE + "not-found"


def test_sdk_reads_the_gateway_kind(client: TestClient) -> None:
    """The SDK's `kind` is the slug of the type the gateway answers with."""
    missing = error_for(client.get(f"/v1/jobs/{MISSING}"))
    assert isinstance(missing, NotFoundError) and missing.kind == "not-found"
    invalid = error_for(client.post("/v1/jobs", json={"model": "nope"}))
    assert isinstance(invalid, ValidationError) and invalid.kind == "validation"
    route = error_for(client.get("/v2/nothing"))
    assert route.kind is None and route.problem.type == "about:blank"


def test_a_record_failed_under_the_former_prefix_reads_in_the_vocabulary(
    client: TestClient, settings: Settings
) -> None:
    store = JobStore.from_url(settings.redis_url)
    spec = JobSpec.model_validate(
        {"model": "c" * 64, "dataset": {"id": "d" * 64}, "measures": [{"name": "lambda_max"}]}
    )
    job = store.create(spec, "cpu")
    old = Problem(
        type="https://sharpness.dev/problems/out-of-memory", title="Out of memory", status=500
    )
    assert store.finish(job.id, JobStatus.failed, error=old)
    body = client.get(f"/v1/jobs/{job.id}").json()
    assert body["error"]["type"] == NAMESPACE + "out-of-memory"

"""Every error is problem+json: framework errors, validation, oversize bodies, bugs."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tasks.settings import Settings
from tests.api.checks import assert_problem


def test_unknown_route_and_method(client: TestClient) -> None:
    assert_problem(client.get("/v2/nothing"), 404, "/v2/nothing")
    assert_problem(client.delete("/v1/measures"), 405, "DELETE")


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

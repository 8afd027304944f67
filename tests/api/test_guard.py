"""The API key and the JSON size cap are checked before the body is read."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from service.guard import MAX_JSON_BYTES
from service.main import create_app
from tasks.settings import Settings
from tests.api.checks import assert_problem


def test_json_body_cap(client: TestClient) -> None:
    big = b'{"model": "' + b"a" * MAX_JSON_BYTES + b'"}'
    r = client.post("/v1/jobs", content=big, headers={"content-type": "application/json"})
    assert_problem(r, 413, "at most")

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(5):
            yield b" " * (MAX_JSON_BYTES // 4)
        yield b"{}"

    r = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert_problem(r, 413, "at most")
    small = client.post(
        "/v1/jobs", content=json.dumps({}).encode(), headers={"content-type": "application/json"}
    )
    assert small.status_code == 422  # under the cap the body is parsed as before


def test_api_key_checked_before_the_body(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"api_key": "s3cret"}))
    with TestClient(app) as c:
        big = b"x" * (MAX_JSON_BYTES * 2)  # neither JSON nor under the cap: never read
        r = c.post("/v1/jobs", content=big, headers={"content-type": "application/json"})
        assert_problem(r, 401, "Bearer")
        assert r.headers["www-authenticate"] == "Bearer"
        ok = c.get("/v1/jobs", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/healthz").status_code == 200  # outside /v1: open

"""Optional bearer token: /v1 needs it when configured; health and metrics stay open."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.main import create_app
from tasks.settings import Settings
from tests.api.checks import assert_problem


def test_api_key(settings: Settings) -> None:
    keyed = settings.model_copy(update={"api_key": "s3cret"})
    with TestClient(create_app(keyed)) as c:
        for path in ("/v1/measures", "/v1/queue", "/v1/jobs"):
            r = c.get(path)
            assert_problem(r, 401, "Authorization")
            assert r.headers["www-authenticate"] == "Bearer"
        assert_problem(c.get("/v1/measures", headers={"Authorization": "Bearer nope"}), 401)
        assert_problem(c.post("/v1/models", files={"file": ("m", b"x")}), 401)
        ok = c.get("/v1/measures", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/healthz").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.get("/readyz").status_code == 503  # open, and honest: no worker


def test_no_key_configured_means_open(client: TestClient) -> None:
    assert client.get("/v1/measures").status_code == 200

"""The measure catalogue comes from the engine registry."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tasks.engine import registry


def test_measures_list_registry(client: TestClient) -> None:
    body = client.get("/v1/measures").json()
    assert [m["name"] for m in body] == list(registry.measures())
    top = next(m for m in body if m["name"] == "top_eigenvalues")
    assert top["summary"]
    assert top["params_schema"]["properties"]["k"]["maximum"] == 200

"""openapi.yaml is generated from the app and committed; it must match the app."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from service.openapi_export import render

ROOT = Path(__file__).resolve().parents[2]


def test_committed_openapi_matches_app() -> None:
    committed = (ROOT / "openapi.yaml").read_text()
    assert committed == render(), (
        "openapi.yaml is stale: run `make openapi` (python -m service.openapi_export "
        "> openapi.yaml) and commit it"
    )


def test_docs_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "Sharpness service"

"""Quotas and the request rate against a real gateway: each over-limit request is a 429 with
Retry-After and a problem type naming the limit and its value."""

from __future__ import annotations

import pytest

from tests.tenants.conftest import Tenants, job_spec

pytestmark = pytest.mark.integration


def _type(r) -> str:
    return r.json()["type"].rsplit(":", 1)[-1]


def test_storage_quota(tenants: Tenants) -> None:
    assert tenants.upload("small", "models", tenants.files["model"]).status_code == 201
    assert tenants.upload("small", "datasets", tenants.files["dataset"]).status_code == 201
    r = tenants.upload("small", "trajectories/optimizer-states", tenants.files["state"])
    assert r.status_code == 429 and _type(r) == "quota-storage", r.text
    assert int(r.headers["retry-after"]) > 0
    assert "max_storage_bytes=" in r.json()["detail"]
    # the same bytes again cost nothing more
    assert tenants.upload("small", "models", tenants.files["model"]).status_code == 200


def test_active_runs_quota(tenants: Tenants) -> None:
    a = tenants.owned
    # on the gpu queue, which no worker here consumes: it stays queued
    waiting = {**job_spec(a["model"], a["dataset"]), "device": "cuda"}
    key = {"Idempotency-Key": "quota-replay"}
    first = tenants["small"].post("/v1/jobs", json=waiting, headers=key)
    assert first.status_code == 202, first.text
    # a retry of the same submit replays the record even at the quota
    replay = tenants["small"].post("/v1/jobs", json=waiting, headers=key)
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    r = tenants["small"].post("/v1/jobs", json=waiting)
    assert r.status_code == 429 and _type(r) == "quota-active-runs", r.text
    assert "max_active_runs=1" in r.json()["detail"] and int(r.headers["retry-after"]) > 0
    # another tenant's runs are not counted against it
    assert tenants["a"].post("/v1/jobs", json=waiting).status_code == 202
    cancel = tenants["small"].post(f"/v1/jobs/{first.json()['id']}/cancel")
    assert cancel.status_code == 200
    again = tenants["small"].post("/v1/jobs", json=waiting)
    assert again.status_code == 202, again.text
    tenants["small"].post(f"/v1/jobs/{again.json()['id']}/cancel")


def test_requests_per_minute(tenants: Tenants) -> None:
    answers = [tenants["chatty"].get("/v1/measures") for _ in range(6)]
    assert [r.status_code for r in answers[:5]] == [200] * 5
    r = answers[5]
    assert r.status_code == 429 and _type(r) == "rate-limited", r.text
    assert 0 < int(r.headers["retry-after"]) <= 60
    assert "max_requests_per_minute=5" in r.json()["detail"]
    # other tenants are not slowed down
    assert tenants["b"].get("/v1/measures").status_code == 200

"""Assertions shared by the API tests."""

from __future__ import annotations

import httpx
import redis
from fastapi.testclient import TestClient

from tasks.settings import Settings


def assert_problem(r: httpx.Response, status: int, *needles: str) -> dict:
    """The answer is problem+json with this status, and its detail mentions each needle."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert {"type", "title", "status", "detail"} <= set(body), body
    assert body["status"] == status
    for needle in needles:
        assert needle in body["detail"], (needle, body["detail"])
    return body


def assert_queued(client: TestClient, path: str, body: dict, settings: Settings) -> dict:
    """Submit `body` to `path`: 202, Location naming the record as GET answers it, queued on
    the cpu queue with the one Celery message there; returns the record."""
    r = client.post(path, json=body)
    assert r.status_code == 202, r.text
    record = r.json()
    assert r.headers["location"] == f"{path}/{record['id']}"
    assert record["status"] == "queued" and record["queue"] == "cpu"
    assert client.get(r.headers["location"]).json() == record
    assert redis.Redis.from_url(settings.redis_url).llen("cpu") == 1  # for the worker to take
    return record

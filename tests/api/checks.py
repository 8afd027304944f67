"""Assertions shared by the API tests."""

from __future__ import annotations

import httpx


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

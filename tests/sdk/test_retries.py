"""Retries against a real local HTTP server: backoff, Retry-After, idempotency keys, timeouts."""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from sharpness_client import (
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    Client,
    ServerError,
    ValidationError,
)
from sharpness_client._http import Request
from sharpness_client._retry import RetryPolicy, retry_after
from tests.sdk.scripted_server import Reply, problem, scripted

JOB = {
    "id": "0" * 32,
    "status": "queued",
    "queue": "cpu",
    "created_at": "2026-01-01T00:00:00Z",
    "spec": {
        "model": "a" * 64,
        "dataset": {"id": "b" * 64},
        "measures": [{"name": "lambda_max", "params": {}}],
    },
}
FLAKY = [
    Reply(503, problem(503, "Service unavailable", "redis down")),
    Reply(429, problem(429, "Too many requests", "slow down"), {"Retry-After": "1"}),
    Reply(202, JOB, {"Location": f"/v1/jobs/{JOB['id']}"}),
]


def _submit(client: Client, **kw):
    return client.jobs.create(model="a" * 64, dataset="b" * 64, measures=["lambda_max"], **kw)


def test_post_retries_503_then_429_with_one_idempotency_key() -> None:
    with scripted(FLAKY) as server, Client(server.url, max_retries=3) as client:
        job = _submit(client)
    assert job.id == JOB["id"] and job.status == "queued"
    assert [s.method for s in server.seen] == ["POST"] * 3
    keys = {s.headers["Idempotency-Key"] for s in server.seen}
    assert len(keys) == 1 and len(keys.pop()) == 32
    # the 429 asked for 1 s: the third request came no sooner
    assert server.seen[2].at - server.seen[1].at >= 0.95
    # the 503 had no Retry-After: full jitter within base·2^0 = 0.5 s (plus scheduling)
    assert server.seen[1].at - server.seen[0].at < 0.5 + 0.3


def test_callers_idempotency_key_is_sent_on_every_attempt() -> None:
    with scripted(FLAKY) as server, Client(server.url) as client:
        _submit(client, idempotency_key="nightly-2026-01-01")
    assert [s.headers["Idempotency-Key"] for s in server.seen] == ["nightly-2026-01-01"] * 3


def test_each_post_gets_its_own_key() -> None:
    with scripted([Reply(202, JOB)]) as server, Client(server.url) as client:
        _submit(client)
        _submit(client)
    assert server.seen[0].headers["Idempotency-Key"] != server.seen[1].headers["Idempotency-Key"]


def test_upload_body_is_sent_whole_on_each_retry(tmp_path) -> None:
    blob = tmp_path / "model.pt2"
    blob.write_bytes(b"PK" + bytes(range(256)) * 400)
    info = {
        "id": "c" * 64,
        "sha256": "c" * 64,
        "size_bytes": blob.stat().st_size,
        "created_at": "2026-01-01T00:00:00Z",
        "format": "torch_export",
        "filename": "model.pt2",
    }
    replies = [Reply(502, None), Reply(201, info)]
    with scripted(replies) as server, Client(server.url) as client:
        got = client.models.upload(blob)
    assert got.format == "torch_export" and got.size_bytes == blob.stat().st_size
    assert len(server.seen) == 2
    for seen in server.seen:  # multipart boundaries differ; the file goes whole each time
        assert blob.read_bytes() in seen.body
        assert len(seen.body) > blob.stat().st_size
    assert b'filename="model.pt2"' in server.seen[1].body


def test_gives_up_after_max_retries_with_the_problem() -> None:
    replies = [Reply(503, problem(503, "Service unavailable", "the job store did not answer"))]
    with scripted(replies) as server, Client(server.url, max_retries=2) as client:
        with pytest.raises(ServerError) as info:
            client.queue.get()
    assert len(server.seen) == 3
    assert info.value.status == 503
    assert "the job store did not answer" in str(info.value)


def test_422_is_not_retried_and_names_the_field() -> None:
    errors = [{"field": "measures.0.params.tol", "message": "must be > 0", "type": "value_error"}]
    body = problem(422, "Request validation failed", "measures.0.params.tol: must be > 0")
    with scripted([Reply(422, {**body, "errors": errors})]) as server, Client(server.url) as c:
        with pytest.raises(ValidationError) as info:
            _submit(c)
    assert len(server.seen) == 1
    assert info.value.fields == ["measures.0.params.tol"]
    assert "measures.0.params.tol" in str(info.value)


def test_timeout_is_retried_then_raised() -> None:
    replies = [Reply(200, {}, delay=1.0)]
    with scripted(replies) as server, Client(server.url, timeout=0.2, max_retries=1) as client:
        with pytest.raises(APITimeoutError):
            client.queue.get()
    assert len(server.seen) == 2


def test_connection_refused_is_retried_then_raised() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", max_retries=1) as client:
        with pytest.raises(APIConnectionError, match="could not reach"):
            client.jobs.get("0" * 32)


def test_async_client_retries_the_same_way() -> None:
    async def go(url: str):
        async with AsyncClient(url) as client:
            return await client.jobs.create(
                model="a" * 64, dataset="b" * 64, measures=["lambda_max"]
            )

    with scripted(FLAKY) as server:
        job = asyncio.run(go(server.url))
    assert job.id == JOB["id"]
    assert len({s.headers["Idempotency-Key"] for s in server.seen}) == 1
    assert server.seen[2].at - server.seen[1].at >= 0.95


def test_api_key_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("SHARPNESS_API_KEY", "s3cret")
    with scripted([Reply(200, JOB)]) as server:
        monkeypatch.setenv("SHARPNESS_URL", server.url)
        with Client() as client:
            client.jobs.get(JOB["id"])
    assert server.seen[0].headers["Authorization"] == "Bearer s3cret"
    assert server.seen[0].path == f"/v1/jobs/{JOB['id']}"


def test_full_jitter_stays_within_the_exponential_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    rng = random.Random(0)
    for attempt in range(6):
        cap = min(8.0, 0.5 * 2**attempt)
        draws = [policy.delay(attempt, None, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in draws)
        assert max(draws) > 0.8 * cap and min(draws) < 0.2 * cap  # spread, not fixed


def test_retry_after_in_seconds_and_as_http_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert retry_after(httpx.Response(429, headers={"Retry-After": "3"})) == 3.0
    assert retry_after(httpx.Response(503, headers={"Retry-After": later}), now=now) == 7.0
    assert retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None
    # the server's wish wins over the jitter draw, capped so a call always ends
    policy = RetryPolicy(max_retry_after=60)
    assert policy.delay(0, httpx.Response(429, headers={"Retry-After": "2"})) == 2.0
    assert policy.delay(0, httpx.Response(429, headers={"Retry-After": "9999"})) == 60.0


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    assert RetryPolicy().should_retry(0, httpx.Response(status))


@pytest.mark.parametrize("status", [400, 401, 404, 409, 413, 415, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    assert not RetryPolicy().should_retry(0, httpx.Response(status))


# ------------------------------------------------- answers lost after the server acted on them
DROP = Reply(0, drop=True)  # the request is read whole, then the connection closes unanswered
TRAJECTORY = {
    **{k: JOB[k] for k in ("id", "status", "queue", "created_at")},
    "spec": {
        "checkpoints": [{"model": "a" * 64, "learning_rate": 0.1}],
        "dataset": {"id": "b" * 64},
    },
}
STUDY = {
    "id": "1" * 32,
    "name": "sweep",
    "created_at": "2026-01-01T00:00:00Z",
    "target": "accuracy_gap",
    "level": 0.9,
    "status": "waiting",
    "message": "waiting for members",
    "members": [],
}
SUBMITS = {
    "job": (JOB, 202, _submit),
    "trajectory": (
        TRAJECTORY,
        202,
        lambda c, **kw: c.trajectories.create(
            checkpoints=[("a" * 64, 0.1)], dataset="b" * 64, **kw
        ),
    ),
    "study": (
        STUDY,
        201,
        lambda c, **kw: c.studies.create(
            name="sweep", jobs=[{"job": JOB["id"], "hyperparameters": {"lr": 0.1}}], **kw
        ),
    ),
}


@pytest.mark.parametrize("kind", SUBMITS)
def test_submit_whose_answer_is_lost_is_retried_under_its_key(kind: str) -> None:
    record, status, submit = SUBMITS[kind]
    with scripted([DROP, Reply(status, record)]) as server, Client(server.url) as client:
        got = submit(client)
    assert got.id == record["id"]
    assert [s.method for s in server.seen] == ["POST", "POST"]
    first, retry = (s.headers["Idempotency-Key"] for s in server.seen)
    assert first == retry and uuid.UUID(hex=first).version == 4
    assert server.seen[0].body == server.seen[1].body


@pytest.mark.parametrize("kind", SUBMITS)
def test_callers_key_is_sent_as_given_and_wins(kind: str) -> None:
    record, status, submit = SUBMITS[kind]
    replies = [DROP, Reply(503, problem(503, "x", "redis down")), Reply(status, record)]
    with scripted(replies) as server, Client(server.url) as client:
        submit(client, idempotency_key="nightly-2026-01-01/run 7")
    assert [s.headers["Idempotency-Key"] for s in server.seen] == ["nightly-2026-01-01/run 7"] * 3


@pytest.mark.parametrize("kind", SUBMITS)
def test_separate_calls_get_separate_keys(kind: str) -> None:
    record, status, submit = SUBMITS[kind]
    with scripted([Reply(status, record)]) as server, Client(server.url) as client:
        submit(client)
        submit(client)
    keys = [s.headers["Idempotency-Key"] for s in server.seen]
    assert len(keys) == 2 and keys[0] != keys[1]


def test_async_submit_whose_answer_is_lost_is_retried_under_its_key() -> None:
    async def go(url: str):
        async with AsyncClient(url) as client:
            return await client.jobs.create(
                model="a" * 64, dataset="b" * 64, measures=["lambda_max"]
            )

    with scripted([DROP, Reply(202, JOB)]) as server:
        assert asyncio.run(go(server.url)).id == JOB["id"]
    assert len({s.headers["Idempotency-Key"] for s in server.seen}) == 1
    assert len(server.seen) == 2


def test_uploads_and_cancels_are_retried_without_a_key(tmp_path) -> None:
    """Stored by content, cancelled once: the service makes them once without a key (and
    takes none on these paths), so none is sent."""
    blob = tmp_path / "model.pt2"
    blob.write_bytes(b"PK" + bytes(200))
    info = {
        "id": "c" * 64,
        "sha256": "c" * 64,
        "size_bytes": 202,
        "created_at": "2026-01-01T00:00:00Z",
        "format": "torch_export",
        "filename": "model.pt2",
    }
    cancelled = {**JOB, "status": "cancelled"}
    replies = [DROP, Reply(201, info), DROP, Reply(200, cancelled)]
    with scripted(replies) as server, Client(server.url) as client:
        assert client.models.upload(blob).id == info["id"]
        assert client.jobs.cancel(JOB["id"]).status == "cancelled"
    assert [s.path for s in server.seen] == ["/v1/models"] * 2 + [
        f"/v1/jobs/{JOB['id']}/cancel"
    ] * 2
    assert not any("Idempotency-Key" in s.headers for s in server.seen)


def test_a_post_without_a_key_is_sent_once() -> None:
    """A POST the service does not make once by key or by nature is never sent twice: its
    answer lost, a second attempt could make a second record."""
    with scripted([DROP, Reply(202, JOB)]) as server, Client(server.url) as client:
        with pytest.raises(APIConnectionError):
            client._http.send(Request("POST", "/v1/jobs", json={}))
    with scripted([Reply(503, problem(503, "x", "y")), Reply(202, JOB)]) as server:
        with Client(server.url) as client, pytest.raises(ServerError):
            client._http.send(Request("POST", "/v1/jobs", json={}))
    assert len(server.seen) == 1
    assert not RetryPolicy().should_retry(0, None, repeatable=False)
    assert not RetryPolicy().should_retry(0, httpx.Response(503), repeatable=False)

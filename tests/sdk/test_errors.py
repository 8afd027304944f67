"""Error answers become the matching exception, carrying the server's problem details."""

from __future__ import annotations

import httpx
import pytest

from sharpness_client import (
    APIStatusError,
    AuthenticationError,
    ConflictError,
    JobFailedError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from sharpness_client.errors import error_for
from sharpness_client.types import Job
from tests.sdk.scripted_server import problem
from tests.sdk.test_retries import JOB


def _resp(status: int, body=None, text: str | None = None) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text)
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, AuthenticationError),
        (404, NotFoundError),
        (409, ConflictError),
        (422, ValidationError),
        (429, RateLimitError),
        (500, ServerError),
        (503, ServerError),
        (413, APIStatusError),
    ],
)
def test_status_maps_to_exception(status: int, cls: type) -> None:
    err = error_for(_resp(status, problem(status, "T", f"detail {status}")))
    assert type(err) is cls
    assert err.status == status and err.detail == f"detail {status}"
    assert f"detail {status}" in str(err)


def test_validation_error_lists_fields() -> None:
    errors = [
        {"field": "dataset", "message": "give exactly one of 'id' or 'uri'"},
        {"field": "measures.1.name", "message": "unknown measure 'lambda'"},
    ]
    err = error_for(_resp(422, problem(422, "Request validation failed", "bad", errors=errors)))
    assert isinstance(err, ValidationError)
    assert err.fields == ["dataset", "measures.1.name"]
    assert "measures.1.name" in str(err) and err.errors[1]["message"].startswith("unknown")


def test_non_problem_body_still_gives_a_problem() -> None:
    err = error_for(_resp(502, text="<html>Bad Gateway</html>"))
    assert isinstance(err, ServerError)
    assert err.problem.status == 502 and "Bad Gateway" in (err.detail or "")


def test_job_failed_error_carries_the_jobs_problem() -> None:
    job = Job.model_validate(
        {**JOB, "status": "failed", "error": problem(422, "Bad inputs", "shape mismatch")}
    )
    err = JobFailedError(job)
    assert err.problem is not None and err.problem.title == "Bad inputs"
    assert "shape mismatch" in str(err) and job.id in str(err)

"""Exceptions: one base class, one subclass per thing a caller may want to handle apart.

Every HTTP error carries the server's RFC 9457 problem (`.problem`, `.status`, `.detail`), so
`except NotFoundError` or `except ValidationError as e: e.errors` needs no parsing of text,
and the message printed by an uncaught exception already names the field at fault.

`.kind` is the problem type's name in the service's one vocabulary (`type` is
`urn:sharpness:problem:<kind>`), the same for an error answer and for a failed job's `error`:
`if e.kind == "idempotency-key-reused"`, `if failed.kind == "time-limit"`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from sharpness_client.types import Job, Problem

PROBLEM_NAMESPACE = "urn:sharpness:problem:"
# The kinds the service defines (its tasks/contract/problem_types.py; a test keeps the two equal).
PROBLEM_KINDS = frozenset(
    {
        # the gateway
        "validation", "invalid-field", "unknown", "uri-rejected", "bad-dataset",
        "missing-array", "unauthorized", "not-found", "no-result", "not-finished",
        "not-analysed", "already-finished", "idempotency-key-reused", "conflict", "too-large",
        "bad-multipart", "truncated-upload", "not-multipart", "enqueue-failed",
        "redis-unavailable", "not-ready", "internal", "in-use",
        # tenants: a role's limit, a quota or the request rate
        "forbidden", "rate-limited", "quota-active-runs", "quota-storage",
        # uploads refused
        "unknown-format", "pickle", "torch-save", "unsafe-archive", "dataset-not-model",
        "pickled-array", "remote-code", "corrupt", "corrupt-zip", "zip-too-large", "truncated",
        "empty", "not-npz", "not-npy", "bad-shape", "length-mismatch", "unsupported-dtype",
        "static-batch", "missing-config", "missing-model-type", "missing-weights",
        "missing-shard", "ambiguous-checkpoint", "missing-head", "bad-head",
        # a failed job or trajectory
        "invalid-input", "checkpoint-mismatch", "device-unavailable", "time-limit",
        "worker-lost", "out-of-memory", "not-implemented", "job-failed",
    }
)  # fmt: skip


def problem_kind(problem: Problem | None) -> str | None:
    """The kind of a problem (`"not-found"`, `"time-limit"`, ...); None for `about:blank`
    (a status with no more to say) or a body that did not come from the service (a proxy)."""
    if problem is None or not problem.type.startswith(PROBLEM_NAMESPACE):
        return None
    return problem.type[len(PROBLEM_NAMESPACE) :]


class SharpnessError(Exception):
    """Base of every error this SDK raises."""


class APIConnectionError(SharpnessError):
    """The service could not be reached (refused, reset, DNS) after all retries."""


class APITimeoutError(APIConnectionError):
    """The request timed out after all retries."""


class APIStatusError(SharpnessError):
    """The service answered with an error status; `.problem` holds its problem details."""

    def __init__(self, problem: Problem, response: httpx.Response | None = None) -> None:
        self.problem = problem
        self.response = response
        self.status = problem.status
        self.detail = problem.detail
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"{self.status} {self.problem.title}"
        return f"{text}: {self.problem.detail}" if self.problem.detail else text

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.problem.errors or [])

    @property
    def kind(self) -> str | None:
        """The problem's kind in the service's vocabulary, e.g. `"idempotency-key-reused"`."""
        return problem_kind(self.problem)


class AuthenticationError(APIStatusError):
    """401: no or a wrong API key (set SHARPNESS_API_KEY or pass api_key=)."""


class NotFoundError(APIStatusError):
    """404: no such model, dataset, job or route."""


class ConflictError(APIStatusError):
    """409: e.g. an Idempotency-Key reused with another spec, or cancelling a finished job."""


class ValidationError(APIStatusError):
    """422: the request was refused; `.errors` lists each field and why."""

    @property
    def fields(self) -> list[str]:
        return [str(e.get("field")) for e in self.errors if e.get("field")]

    def _message(self) -> str:
        base = super()._message()
        named = [f for f in self.fields if f not in (self.problem.detail or "")]
        return f"{base} (fields: {', '.join(named)})" if named else base


class RateLimitError(APIStatusError):
    """429: too many requests; retried with Retry-After before this is raised."""


class ServerError(APIStatusError):
    """5xx: the service failed; retried before this is raised."""


class JobFailedError(SharpnessError):
    """A job ended `failed`; `.job` is the record and `.problem` the reason the worker gave."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.problem = job.error
        reason = job.error.detail or job.error.title if job.error else "no reason recorded"
        super().__init__(f"job {job.id} failed: {reason}")

    @property
    def kind(self) -> str | None:
        """Why, in the service's vocabulary: `"time-limit"`, `"out-of-memory"`, ..."""
        return problem_kind(self.problem)


class JobCancelledError(SharpnessError):
    """A job ended `cancelled` while `measure()` waited for its results."""

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job.id} was cancelled")


class JobTimeoutError(SharpnessError):
    """`jobs.wait` gave up before the job finished; the job itself goes on (`.job`)."""

    def __init__(self, job: Job, timeout: float) -> None:
        self.job = job
        self.timeout = timeout
        super().__init__(f"job {job.id} still {job.status.value} after {timeout:g} s")


class NotConvergedWarning(UserWarning):
    """A finished run holds a value a budget stopped before it reached the requested accuracy
    (`converged` false: `diagnostics.limited_by` is "iteration budget", "basis budget" or
    "time"). The text names each such measure, the budget and the fix; `.run` is the job or
    trajectory and `.measures` names what did not converge (`"trace[0]"`: a layer,
    `"checkpoint 2"`: a trajectory's point). Results limited by the dtype's rounding converged
    and warn nothing. Silence it with
    `warnings.filterwarnings("ignore", category=NotConvergedWarning)`."""

    def __init__(self, message: str, run: Any = None, measures: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.run = run
        self.measures = list(measures)


class NotConvergedError(SharpnessError):
    """Raised instead of NotConvergedWarning by `measure(..., raise_on_not_converged=True)`
    and `wait(..., raise_on_not_converged=True)`; `.job` is the finished record (its values
    are there), `.measures` names what did not converge and `.limited_by` the budget of each."""

    def __init__(
        self, message: str, job: Any, measures: Sequence[str], limited_by: dict[str, str | None]
    ) -> None:
        super().__init__(message)
        self.job = job
        self.measures = list(measures)
        self.limited_by = dict(limited_by)


_BY_STATUS: dict[int, type[APIStatusError]] = {
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
    429: RateLimitError,
}


def problem_of(response: httpx.Response) -> Problem:
    """The problem body, or one made from the status when the body is not problem+json
    (a proxy's HTML page, an empty 502)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "title" in body:
        body.setdefault("status", response.status_code)
        try:
            return Problem.model_validate(body)
        except Exception:  # malformed problem: fall through to the generic one
            pass
    text = response.text.strip()[:500] or None
    return Problem(
        title=response.reason_phrase or "Error", status=response.status_code, detail=text
    )


def error_for(response: httpx.Response) -> APIStatusError:
    """The exception matching an error response's status."""
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIStatusError)
    return cls(problem_of(response), response)

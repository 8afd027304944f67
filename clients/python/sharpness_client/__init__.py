"""Python SDK for the sharpness service: `Client`, `AsyncClient`, typed models, errors."""

from __future__ import annotations

__version__ = "0.1.0"

from sharpness_client.client import AsyncClient, Client  # noqa: E402
from sharpness_client.errors import (  # noqa: E402
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ConflictError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    NotConvergedError,
    NotConvergedWarning,
    NotFoundError,
    RateLimitError,
    ServerError,
    SharpnessError,
    ValidationError,
)
from sharpness_client.types import Job, JobSpec, JobStatus, MeasureRequest  # noqa: E402

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "Job",
    "JobCancelledError",
    "JobFailedError",
    "JobSpec",
    "JobStatus",
    "JobTimeoutError",
    "MeasureRequest",
    "NotConvergedError",
    "NotConvergedWarning",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
    "SharpnessError",
    "ValidationError",
    "__version__",
]

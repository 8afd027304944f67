"""Python SDK for the sharpness service: `Client`, `AsyncClient`, typed models, errors."""

from __future__ import annotations

from sharpness_client._version import __version__
from sharpness_client.client import AsyncClient, Client
from sharpness_client.errors import (
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
from sharpness_client.types import Job, JobSpec, JobStatus, MeasureRequest

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

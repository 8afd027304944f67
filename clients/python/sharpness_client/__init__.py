"""Python SDK for the sharpness service: `Client`, `AsyncClient`, typed models, errors, and
`log_to_mlflow` (with the `mlflow` extra)."""

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
from sharpness_client.mlflow_logging import log_to_mlflow
from sharpness_client.types import Comparison, Job, JobSpec, JobStatus, MeasureRequest

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "Comparison",
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
    "log_to_mlflow",
]

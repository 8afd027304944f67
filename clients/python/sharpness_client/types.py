"""Typed request and response models, one per schema of the service's openapi.yaml.

Written by hand (so they read well and carry docstrings) and held to the contract by
tests/sdk/test_types_contract.py: every schema property exists here and vice versa, with the
same required fields and enum values. Every model keeps unknown fields (`extra="allow"`)
rather than refusing them: a job's spec comes back inside the job record, and an SDK must keep
working against a newer gateway that adds fields. Requests are built from keyword arguments,
so a misspelt argument still fails before any network call.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


# ---------------------------------------------------------------------------- job spec
class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once the job will not change again (what `jobs.wait` waits for)."""
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class DatasetRef(_Model):
    """An uploaded dataset's `id` or a `uri`; how many examples and how to batch them."""

    id: str | None = None
    uri: str | None = None
    max_samples: int | None = None
    batch_size: int = 256
    inputs_key: str = "inputs"
    targets_key: str = "targets"


class MeasureRequest(_Model):
    """A measure by name (see `GET /v1/measures`) with its parameters; the server fills in
    defaults and checks bounds, naming `measures.N.params.<field>` when one is wrong."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class JobSpec(_Model):
    """What to measure, on which model and data (the body of `POST /v1/jobs`)."""

    model: str
    dataset: DatasetRef
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    mode: Literal["eval", "train"] = "eval"
    measures: list[MeasureRequest]
    device: Literal["auto", "cpu", "cuda"] = "auto"
    labels: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------------------- job record
class Problem(_Model):
    """RFC 9457 problem details: the body of every error answer and of a failed job."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class MeasureProgress(_Model):
    state: Literal["pending", "running", "done", "failed"] = "pending"
    iteration: int = 0
    estimate: Any = None
    updated_at: datetime | None = None


class MeasureResult(_Model):
    """A measure's headline `value` with the diagnostics that say how far to trust it."""

    value: Any
    converged: bool | None = None
    hvps: int | None = None
    seconds: float | None = None
    diagnostics: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    per_layer: dict[str, Any] | None = None


class Job(_Model):
    id: str
    status: JobStatus
    spec: JobSpec
    queue: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: dict[str, MeasureProgress] = Field(default_factory=dict)
    results: dict[str, MeasureResult] = Field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    error: Problem | None = None
    worker: str | None = None
    device: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    attempts: int = 0
    cancel_requested: bool = False

    def value(self, measure: str) -> Any:
        """The headline value of one measure (KeyError naming what exists if absent)."""
        try:
            return self.results[measure].value
        except KeyError:
            have = ", ".join(sorted(self.results)) or "none"
            raise KeyError(f"job {self.id} has no result {measure!r}; results: {have}") from None


class JobPage(_Model):
    items: list[Job]
    next_cursor: str | None = None


# ---------------------------------------------------------------------------- uploads
class ModelInfo(_Model):
    id: str
    sha256: str
    size_bytes: int
    created_at: datetime
    filename: str | None = None
    format: Literal["torch_export", "torchscript", "safetensors"]
    architecture: str | None = None
    config: dict[str, Any] | None = None
    tensors: int | None = None
    parameters: int | None = None


class ArrayInfo(_Model):
    dtype: str
    shape: list[int]


class DatasetInfo(_Model):
    id: str
    sha256: str
    size_bytes: int
    created_at: datetime
    filename: str | None = None
    format: Literal["npz", "safetensors"]
    arrays: dict[str, ArrayInfo]
    num_examples: int
    inputs_key: str
    targets_key: str


# ---------------------------------------------------------------------------- catalogue, ops
class MeasureInfo(_Model):
    name: str
    summary: str
    params_schema: dict[str, Any]


class WorkerInfo(_Model):
    hostname: str
    device: str | None = None
    last_seen: datetime | None = None
    age_s: float | None = None


class RunningJob(_Model):
    id: str
    queue: str | None = None
    worker: str | None = None
    device: str | None = None
    started_at: datetime | None = None


class QueueDepth(_Model):
    name: str
    waiting: int
    reserved: int
    queued_jobs: int
    oldest_queued_age_s: float | None = None


class QueueStatus(_Model):
    queues: list[QueueDepth]
    workers: list[WorkerInfo]
    running: list[RunningJob]
    oldest_queued_age_s: float | None = None
    jobs_by_status: dict[str, int]


class Health(_Model):
    status: Literal["ok"] = "ok"


class Ready(_Model):
    status: Literal["ready"] = "ready"
    checks: dict[str, str]


__all__ = [
    "ArrayInfo",
    "DatasetInfo",
    "DatasetRef",
    "Health",
    "Job",
    "JobPage",
    "JobSpec",
    "JobStatus",
    "MeasureInfo",
    "MeasureProgress",
    "MeasureRequest",
    "MeasureResult",
    "ModelInfo",
    "Problem",
    "QueueDepth",
    "QueueStatus",
    "Ready",
    "RunningJob",
    "WorkerInfo",
]

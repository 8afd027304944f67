"""The one job spec: what a client asks for and what a job record holds.

Both the gateway and the worker import this module; it must never import torch. Measure
parameters are validated against the engine's registry (torch-free), so a bad measure name or
an out-of-bounds parameter is refused at submission with the field named.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tasks.engine import registry

MODEL_ID_PATTERN = r"^[0-9a-f]{64}$"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class DatasetRef(BaseModel):
    """Either an uploaded dataset's id or a URI; how many examples and how to batch them."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=MODEL_ID_PATTERN, description="Uploaded id.")
    uri: str | None = Field(
        default=None,
        max_length=2048,
        description="Reference instead of an upload: file:// below the configured data root, "
        "or http(s):// when enabled. .npz or .safetensors.",
    )
    max_samples: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Use only the first N examples."
    )
    batch_size: int = Field(default=256, ge=1, le=65_536)
    inputs_key: str = Field(default="inputs", max_length=128)
    targets_key: str = Field(default="targets", max_length=128)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetRef:
        if (self.id is None) == (self.uri is None):
            raise ValueError("give exactly one of 'id' or 'uri'")
        return self


class MeasureRequest(BaseModel):
    """One measure of the registry, by name, with its parameters (defaults filled in)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="A measure name from GET /v1/measures.")
    params: dict[str, Any] = Field(default_factory=dict, validate_default=True)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        try:
            registry.get(name)
        except KeyError as e:  # pydantic reports ValueError, not KeyError, as a field error
            raise ValueError(e.args[0]) from None
        return name

    @field_validator("params")
    @classmethod
    def _valid_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Validated here, not after the model, so an error's location is `params.<field>`."""
        if "name" not in info.data:  # the name was refused; that error says it all
            return params
        return registry.validate_params(info.data["name"], params).model_dump()


class JobSpec(BaseModel):
    """What to measure, on which model and data."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(pattern=MODEL_ID_PATTERN, description="Id of an uploaded model.")
    dataset: DatasetRef
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    mode: Literal["eval", "train"] = Field(
        default="eval",
        description="eval: dropout off, BatchNorm on running statistics. train: results "
        "depend on batch composition (the result says so).",
    )
    measures: list[MeasureRequest] = Field(min_length=1, max_length=32)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)

    @field_validator("measures")
    @classmethod
    def _unique(cls, measures: list[MeasureRequest]) -> list[MeasureRequest]:
        names = [m.name for m in measures]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"each measure may appear once; repeated: {', '.join(dupes)}")
        return measures


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class MeasureProgress(BaseModel):
    state: Literal["pending", "running", "done", "failed"] = "pending"
    iteration: int = 0
    estimate: Any = None
    updated_at: datetime | None = None


class MeasureResult(BaseModel):
    """A measure's value with the diagnostics that say how far to trust it."""

    model_config = ConfigDict(extra="allow")

    value: Any = Field(description="The measure's headline figure (a float or a list).")
    converged: bool | None = None
    hvps: int | None = Field(default=None, description="Hessian-vector products used.")
    seconds: float | None = None
    diagnostics: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    per_layer: dict[str, Any] | None = None


class Job(BaseModel):
    id: str
    status: JobStatus
    spec: JobSpec
    queue: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: dict[str, MeasureProgress] = Field(default_factory=dict)
    results: dict[str, MeasureResult] = Field(default_factory=dict)
    evaluation: dict[str, Any] | None = Field(
        default=None, description="Loss and accuracy at the measured weights, and the mode."
    )
    error: Problem | None = None
    worker: str | None = None
    device: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    attempts: int = 0
    cancel_requested: bool = False


class JobPage(BaseModel):
    items: list[Job]
    next_cursor: str | None = None

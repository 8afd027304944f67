"""Shapes of the gateway's HTTP responses (the job spec and job record live in tasks.spec).

Kept apart from the routers so the OpenAPI document, and the SDK built from it, change only
when a response shape does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class BlobInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(description="The sha256 of the bytes; re-uploading them returns this id.")
    sha256: str
    size_bytes: int
    created_at: datetime = Field(description="When these bytes were first stored.")
    filename: str | None = Field(default=None, description="Client filename of the first upload.")


class ModelInfo(BlobInfo):
    format: Literal["torch_export", "torchscript", "safetensors", "huggingface"]
    architecture: str | None = Field(
        default=None, description="safetensors only: the built-in architecture to load into."
    )
    config: dict[str, Any] | None = Field(
        default=None,
        description="safetensors: keyword arguments for the architecture; huggingface: the "
        "checkpoint's config.json.",
    )
    head: str | None = Field(
        default=None,
        description="huggingface only: the head transformers builds (sequence_classification, "
        "token_classification, causal_lm, masked_lm, image_classification).",
    )
    tensors: int | None = Field(
        default=None, description="safetensors and huggingface: tensor count."
    )
    parameters: int | None = Field(
        default=None,
        description="safetensors and huggingface: element count of the stored tensors.",
    )


class ArrayInfo(BaseModel):
    dtype: str = Field(description="numpy-style name: float32, int64, bool, bfloat16, ...")
    shape: list[int]


class DatasetInfo(BlobInfo):
    format: Literal["npz", "safetensors"]
    arrays: dict[str, ArrayInfo]
    num_examples: int = Field(description="First dimension shared by inputs and targets.")
    inputs_key: str | list[str] | dict[str, str] = Field(
        description="The model's inputs (given or recognised at upload): one array, a list "
        "(positional) or keyword → array. Jobs that name no inputs use these."
    )
    targets_key: str = Field(description="The targets array; jobs that name none use it.")


class MeasureInfo(BaseModel):
    name: str
    summary: str
    params_schema: dict[str, Any] = Field(description="JSON schema of the measure's params.")


class WorkerInfo(BaseModel):
    hostname: str
    device: str | None = None
    last_seen: datetime | None = None
    age_s: float | None = Field(default=None, description="Seconds since the last heartbeat.")


class RunningJob(BaseModel):
    id: str
    queue: str | None = None
    worker: str | None = None
    device: str | None = None
    started_at: datetime | None = None


class QueueDepth(BaseModel):
    name: str
    waiting: int = Field(description="Messages in the broker not yet taken by a worker.")
    reserved: int = Field(
        description="Messages a worker took but has not acknowledged (running, or about to be "
        "redelivered after the visibility timeout if the worker died)."
    )
    queued_jobs: int = Field(description="Job records with status queued routed to this queue.")
    oldest_queued_age_s: float | None = Field(
        default=None, description="Age of the oldest queued job on this queue."
    )


class QueueStatus(BaseModel):
    queues: list[QueueDepth]
    workers: list[WorkerInfo]
    running: list[RunningJob]
    oldest_queued_age_s: float | None = Field(
        default=None, description="Seconds the oldest queued job (any queue) has waited."
    )
    jobs_by_status: dict[str, int]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str]

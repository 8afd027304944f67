"""What every run (a job, a trajectory) records of its lifecycle: its status, each attempt,
the error that ended it (RFC 9457 problem details) and the progress of each of its measures."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


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
    bound: float | None = Field(
        default=None,
        description="The estimate's current residual bound, where the measure has one "
        "(Lanczos: |β s| of the top Ritz value, which the run drives down to its tolerance "
        "or the products' rounding floor): how converged a long run is so far.",
        exclude_if=lambda bound: bound is None,  # stored and sent as before when absent
    )
    updated_at: datetime | None = None


class Attempt(BaseModel):
    """One run of a record by one worker: who, when, and why it ended."""

    attempt: int = Field(description="1 for the first run, 2 for the next, ...")
    worker: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str = Field(
        description="succeeded, failed, cancelled; worker-lost (its heartbeats stopped: the "
        "record was requeued or, with its attempts spent, failed); handed-back (the worker "
        "shut down and returned it to the queue)"
    )


class RunRecord(BaseModel):
    """What every run (a job, a trajectory) records of its lifecycle: queued → running →
    succeeded, failed or cancelled, each attempt, and who ran it. The stores write these
    fields the same way for every kind (tasks/store/records.py RecordStore)."""

    id: str
    status: JobStatus
    queue: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: Problem | None = None
    worker: str | None = None
    device: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    attempts: int = 0
    attempt_history: list[Attempt] = Field(
        default_factory=list, description="Each ended run of the record, oldest first."
    )
    cancel_requested: bool = False
    cancelled_by: str | None = Field(
        default=None,
        description="The tenant that asked first to cancel the record (`local` in the open mode, "
        "`admin` with SHARPNESS_API_KEY alone); null when nobody asked.",
    )

"""Shapes of the ops responses: the queue, workers, health and readiness.

Kept apart from the routers so the OpenAPI document, and the SDK built from it, change only
when a response shape does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class WorkerInfo(BaseModel):
    hostname: str
    device: str | None = None
    last_seen: datetime | None = None
    age_s: float | None = Field(default=None, description="Seconds since the last heartbeat.")


class RunningJob(BaseModel):
    id: str
    kind: Literal["job", "trajectory"] = "job"
    queue: str | None = None
    worker: str | None = None
    device: str | None = None
    started_at: datetime | None = None
    owner: str | None = Field(
        default=None, description="The tenant that submitted it (null: made without tenants)."
    )


class QueueDepth(BaseModel):
    name: str
    waiting: int = Field(description="Messages in the broker not yet taken by a worker.")
    reserved: int = Field(
        description="Messages a worker took but has not acknowledged (running, or about to be "
        "redelivered after the visibility timeout if the worker died)."
    )
    queued_jobs: int = Field(
        description="Job records with status queued routed to this queue (cancelled jobs "
        "are not counted, even while their message still waits in the broker)."
    )
    queued_trajectories: int = Field(
        default=0, description="Trajectory records with status queued routed to this queue."
    )
    oldest_queued_age_s: float | None = Field(
        default=None,
        description="Seconds the oldest queued record (job or trajectory) on this queue has "
        "waited since it was created.",
    )


class QueueStatus(BaseModel):
    queues: list[QueueDepth]
    workers: list[WorkerInfo]
    running: list[RunningJob] = Field(description="Running jobs and trajectories, oldest first.")
    oldest_queued_age_s: float | None = Field(
        default=None,
        description="Seconds the oldest queued record (job or trajectory, any queue) has waited.",
    )
    jobs_by_status: dict[str, int]
    trajectories_by_status: dict[str, int] = Field(default_factory=dict)
    active_by_tenant: dict[str, int] = Field(
        default_factory=dict,
        description="Queued and running jobs and trajectories of each configured tenant.",
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str]

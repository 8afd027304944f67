"""Request dependencies: the stores, the Celery app, the owners of records and the caller.

The lookups that answer 404 for an unknown id live in service.common.

Everything is built once per app in `create_app` and read from `app.state`, so a test builds
an app against its private Redis and data directory, and nothing connects at import time.
"""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from service.ops.consumers import ConsumedQueues
from service.studies.store import StudyStore
from service.tenants.registry import OPEN, Tenant, Tenants
from tasks.settings import Settings
from tasks.store.blobs import BlobStore
from tasks.store.owners import Owners
from tasks.store.records import JobStore
from tasks.store.trajectories import TrajectoryStore

bearer = HTTPBearer(
    auto_error=False,
    description="A tenant's key (SHARPNESS_TENANTS_FILE) or SHARPNESS_API_KEY; required on /v1 "
    "and /metrics when either is set.",
)


async def settings(request: Request) -> Settings:
    return request.app.state.settings


async def blobs(request: Request) -> BlobStore:
    return request.app.state.blobs


async def jobs(request: Request) -> JobStore:
    return request.app.state.jobs


async def trajectories(request: Request) -> TrajectoryStore:
    """The trajectory records, on the job store's Redis connection."""
    return TrajectoryStore(request.app.state.jobs.r)


async def studies(request: Request) -> StudyStore:
    return request.app.state.studies


async def celery_app(request: Request) -> Celery:
    return request.app.state.celery


async def consumed_queues(request: Request) -> ConsumedQueues:
    return request.app.state.consumed


async def owners(request: Request) -> Owners:
    return request.app.state.owners


async def tenants(request: Request) -> Tenants:
    return request.app.state.tenants


async def caller(request: Request) -> Tenant:
    """The calling tenant, as the guard found it from the bearer key (the local admin when
    no tenant is configured, or outside /v1)."""
    return getattr(request.state, "tenant", OPEN)


SettingsDep = Annotated[Settings, Depends(settings)]
BlobsDep = Annotated[BlobStore, Depends(blobs)]
JobsDep = Annotated[JobStore, Depends(jobs)]
TrajectoriesDep = Annotated[TrajectoryStore, Depends(trajectories)]
StudiesDep = Annotated[StudyStore, Depends(studies)]
CeleryDep = Annotated[Celery, Depends(celery_app)]
ConsumedDep = Annotated[ConsumedQueues, Depends(consumed_queues)]
OwnersDep = Annotated[Owners, Depends(owners)]
CallerDep = Annotated[Tenant, Depends(caller)]
TenantsDep = Annotated[Tenants, Depends(tenants)]

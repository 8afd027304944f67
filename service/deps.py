"""Request dependencies: the stores, the Celery app, the owners of records and the caller.

The lookups that answer 404 for an unknown id live in service.common.

Everything is built once per app in `create_app` and read from `app.state`, so a test builds
an app against its private Redis and data directory, and nothing connects at import time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NamedTuple

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


async def trajectories(request: Request) -> TrajectoryStore:
    """The trajectory records, on the job store's Redis connection."""
    return TrajectoryStore(request.app.state.jobs.r)


def _app_state(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency that reads one thing `create_app` put on `app.state`."""

    async def read(request: Request) -> Any:
        return getattr(request.app.state, name)

    read.__name__ = name
    return read


async def caller(request: Request) -> Tenant:
    """The calling tenant, as the guard found it from the bearer key (the local admin when
    no tenant is configured, or outside /v1)."""
    return getattr(request.state, "tenant", OPEN)


SettingsDep = Annotated[Settings, Depends(_app_state("settings"))]
BlobsDep = Annotated[BlobStore, Depends(_app_state("blobs"))]
JobsDep = Annotated[JobStore, Depends(_app_state("jobs"))]
TrajectoriesDep = Annotated[TrajectoryStore, Depends(trajectories)]
StudiesDep = Annotated[StudyStore, Depends(_app_state("studies"))]
CeleryDep = Annotated[Celery, Depends(_app_state("celery"))]
ConsumedDep = Annotated[ConsumedQueues, Depends(_app_state("consumed"))]
OwnersDep = Annotated[Owners, Depends(_app_state("owners"))]
CallerDep = Annotated[Tenant, Depends(caller)]
TenantsDep = Annotated[Tenants, Depends(_app_state("tenants"))]


class Uploader(NamedTuple):
    """What an upload route stores with: the blob store, the settings (size caps), and the
    calling tenant with the owner index that records it as a holder."""

    blobs: BlobStore
    settings: Settings
    tenant: Tenant
    owners: Owners


async def uploader(
    blobs: BlobsDep, settings: SettingsDep, tenant: CallerDep, owners: OwnersDep
) -> Uploader:
    return Uploader(blobs, settings, tenant, owners)


UploaderDep = Annotated[Uploader, Depends(uploader)]

"""Request dependencies: the stores, the Celery app and the optional bearer-token check.

The lookups that answer 404 for an unknown id live in service.common.

Everything is built once per app in `create_app` and read from `app.state`, so a test builds
an app against its private Redis and data directory, and nothing connects at import time.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.ops.consumers import ConsumedQueues
from service.problems import ProblemError
from service.studies.store import StudyStore
from tasks.settings import Settings
from tasks.store.blobs import BlobStore
from tasks.store.records import JobStore
from tasks.store.trajectories import TrajectoryStore

_bearer = HTTPBearer(
    auto_error=False,
    description="Required on /v1 routes when SHARPNESS_API_KEY is set.",
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


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """With an API key configured, /v1 needs `Authorization: Bearer <key>` (constant-time
    comparison); without one the API is open, as on a laptop."""
    expected = request.app.state.settings.api_key
    if not expected:
        return
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ProblemError(
            401,
            "unauthorized",
            "Authorization: send 'Authorization: Bearer <key>' with the configured API key",
            headers={"WWW-Authenticate": "Bearer"},
        )


SettingsDep = Annotated[Settings, Depends(settings)]
BlobsDep = Annotated[BlobStore, Depends(blobs)]
JobsDep = Annotated[JobStore, Depends(jobs)]
TrajectoriesDep = Annotated[TrajectoryStore, Depends(trajectories)]
StudiesDep = Annotated[StudyStore, Depends(studies)]
CeleryDep = Annotated[Celery, Depends(celery_app)]
ConsumedDep = Annotated[ConsumedQueues, Depends(consumed_queues)]

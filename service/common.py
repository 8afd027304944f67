"""Pieces the routers share: the id path parameters, the lookups that answer 404 for an unknown
id (dependencies, as fastapi-best-practices' `valid_post_id`), and the problem responses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Path

from service.deps import BlobsDep, JobsDep, StudiesDep, TrajectoriesDep
from service.problems import MEDIA_TYPE, ProblemError
from service.studies.store import StudyRecord
from tasks.contract.spec import MODEL_ID_PATTERN, Job, Problem, Trajectory

RECORD_ID_PATTERN = r"^[0-9a-f]{32}$"

BlobId = Annotated[
    str,
    Path(
        pattern=MODEL_ID_PATTERN,
        description="The lowercase hex sha256 of the file, as returned by the upload.",
    ),
]
JobId = Annotated[str, Path(pattern=RECORD_ID_PATTERN, description="Job id from the submit.")]
TrajectoryId = Annotated[
    str, Path(pattern=RECORD_ID_PATTERN, description="Trajectory id from the submit.")
]
StudyId = Annotated[str, Path(pattern=RECORD_ID_PATTERN, description="Study id from the create.")]


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries saying these statuses answer with a problem+json body."""
    return {s: {"model": Problem, "content": {MEDIA_TYPE: {}}} for s in statuses}


def not_found(noun: str, id: str) -> ProblemError:
    return ProblemError(404, "not-found", f"id: no {noun} {id}")


async def existing_job(id: JobId, store: JobsDep) -> Job:
    job = store.get(id)
    if job is None:
        raise not_found("job", id)
    return job


async def existing_trajectory(id: TrajectoryId, store: TrajectoriesDep) -> Trajectory:
    trajectory = store.get(id)
    if trajectory is None:
        raise not_found("trajectory", id)
    return trajectory


async def existing_study(id: StudyId, studies: StudiesDep) -> StudyRecord:
    record = studies.get(id)
    if record is None:
        raise not_found("study", id)
    return record


def _existing_blob(kind: str, noun: str) -> Callable[..., dict[str, Any]]:
    async def lookup(id: BlobId, blobs: BlobsDep) -> dict[str, Any]:
        record = blobs.meta(kind, id)
        if record is None:
            raise not_found(noun, id)
        return record

    lookup.__name__ = f"existing_{noun}"
    return lookup


ExistingJob = Annotated[Job, Depends(existing_job)]
ExistingTrajectory = Annotated[Trajectory, Depends(existing_trajectory)]
ExistingStudy = Annotated[StudyRecord, Depends(existing_study)]
ExistingModel = Annotated[dict[str, Any], Depends(_existing_blob("models", "model"))]
ExistingDataset = Annotated[dict[str, Any], Depends(_existing_blob("datasets", "dataset"))]

"""Jobs: submit a spec (202 + Location), read, list with filters, cancel."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from service.blobs import references
from service.common import ExistingJob, problems
from service.deps import BlobsDep, CeleryDep, JobsDep, SettingsDep, StudiesDep
from service.problems import ProblemError, invalid
from service.runs import enqueue_or_fail
from service.studies.service import with_predictions
from tasks import reaper
from tasks.celery_app import RUN_JOB_TASK, queue_for
from tasks.jobstore import JobStore
from tasks.spec import Job, JobPage, JobSpec, JobStatus

log = logging.getLogger("sharpness.gateway")

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Resubmitting with the same key (for 24 h) returns the job made the first "
        "time, whatever its state (even if its model or dataset was deleted since), and "
        "enqueues nothing. A different spec under a used key is a 409. After a 503 (the job "
        "could not be enqueued) the key is free again: the retry makes and enqueues a job.",
    ),
]


def _enqueue(celery: CeleryDep, store: JobStore, job: Job) -> None:
    enqueue_or_fail(celery, store, RUN_JOB_TASK, job.id, job.queue, "job")


@router.post(
    "",
    status_code=202,
    response_model=Job,
    summary="Submit a job",
    responses=problems(409, 422, 503),
)
def submit_job(
    spec: JobSpec,
    response: Response,
    store: JobsDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    celery: CeleryDep,
    studies: StudiesDep,
    idempotency_key: IdempotencyKey = None,
) -> Job:
    """Validate the spec and what it names (model, dataset or URI), record the job and
    enqueue it on the `gpu` queue (device cuda) or `cpu` (cpu, auto). Answers 202 with
    `Location: /v1/jobs/{id}`; poll that until `status` is succeeded, failed or cancelled."""
    # a replay answers the job made the first time, whatever happened to its inputs since
    if not (idempotency_key and store.find_idempotent(idempotency_key) is not None):
        references.check(spec, blobs, settings)
    created = store.create(spec, queue_for(spec.device), idempotency_key)
    job = store.get(created.id) or created  # as GET shows it (progress entries included)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if idempotency_key:
        if job.spec.model_dump() != spec.model_dump():
            raise ProblemError(
                409,
                "idempotency-key-reused",
                f"Idempotency-Key: already used for job {job.id} with a different spec",
            )
        # one message per job, even when two requests with the same key race
        if not store.mark_enqueued(job.id):
            response.headers["Idempotent-Replayed"] = "true"
            return with_predictions([job], store, studies)[0]
    try:
        _enqueue(celery, store, job)
    except ProblemError:
        if idempotency_key:  # the retry the 503 asks for must enqueue, not replay a failure
            store.release_idempotency(idempotency_key, job.id)
        raise
    return with_predictions([job], store, studies)[0]


@router.get("", response_model=JobPage, summary="List jobs", responses=problems(422))
def list_jobs(
    store: JobsDep,
    studies: StudiesDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    label: Annotated[
        list[str] | None,
        Query(description="key:value; repeat for several (all must match)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> JobPage:
    """Newest first. Follow `next_cursor` until it is null."""
    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise invalid("query.label", f"{item!r} is not key:value")
        labels[key] = value
    try:
        items, next_cursor = store.list(status=status, labels=labels, limit=limit, cursor=cursor)
    except ValueError as e:
        raise invalid("query.cursor", str(e)) from e
    return JobPage(items=with_predictions(items, store, studies), next_cursor=next_cursor)


@router.get("/{id}", response_model=Job, summary="Read a job", responses=problems(404, 422))
def get_job(job: ExistingJob, store: JobsDep, studies: StudiesDep) -> Job:
    """`prediction` says what can honestly be said about the job's generalization gap: a
    calibrated prediction with its interval inside a study, otherwise why there is none."""
    return with_predictions([job], store, studies)[0]


@router.post(
    "/{id}/cancel",
    response_model=Job,
    summary="Cancel a job",
    responses={202: {"model": Job, "description": "Running: the worker will stop it"}}
    | problems(404, 409, 422),
)
def cancel_job(
    job: ExistingJob,
    store: JobsDep,
    studies: StudiesDep,
    settings: SettingsDep,
    celery: CeleryDep,
    response: Response,
) -> Job:
    """A queued job is cancelled at once (**200**, status cancelled; its message is skipped
    when a worker takes it). A running job gets `cancel_requested: true` and the worker stops
    it between iterations (**202**; poll until status is cancelled). Cancelling a cancelled
    job is a no-op (**200**). A succeeded or failed job cannot be cancelled (**409**). A
    running job whose worker stopped beating is cancelled at once (**200**)."""
    if job.status != JobStatus.cancelled:
        job = store.request_cancel(job.id) or job
    if job.status == JobStatus.running:
        reaper.reap_one(store, store, job.id, settings, reaper.celery_sender(celery))
        job = store.get(job.id) or job
    if job.status in (JobStatus.succeeded, JobStatus.failed):
        raise ProblemError(
            409,
            "already-finished",
            f"id: job {job.id} already {job.status.value}; nothing to cancel",
        )
    response.status_code = 200 if job.status == JobStatus.cancelled else 202
    return with_predictions([job], store, studies)[0]

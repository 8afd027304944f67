"""Jobs: submit a spec (202 + Location), read, list with filters, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from service import runs
from service.blobs import references
from service.common import ExistingJob, problems
from service.deps import (
    CallerDep,
    JobsDep,
    OwnersDep,
    StudiesDep,
)
from service.ops import consumers
from service.problems import ProblemError, invalid
from service.studies.service import StudyChoiceError, with_new_prediction, with_predictions
from service.tenants import ownership
from tasks.app import RUN_JOB_TASK
from tasks.contract.spec import Job, JobPage, JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
NO_STUDY = "0" * 32  # an id no study has (ids are uuid4 hex)

Responses = dict[int | str, dict[str, Any]]
SUBMIT_RESPONSES: Responses = {
    **problems(400, 409, 413, 422, 503),
    **{status: entry for status, entry in consumers.SUBMIT_WARNING.items()},
}
CANCEL_RESPONSES: Responses = {
    202: {"model": Job, "description": "Running: the worker will stop it"},
    **problems(404, 409, 422),
}


@router.post(
    "",
    status_code=202,
    response_model=Job,
    summary="Submit a job",
    responses=SUBMIT_RESPONSES,
)
async def submit_job(
    spec: JobSpec,
    response: Response,
    store: JobsDep,
    studies: StudiesDep,
    route: runs.RunRouteDep,
    idempotency_key: runs.IdempotencyKey = None,
) -> Job:
    """Validate the spec and what it names (model, dataset or URI), record the job and
    enqueue it on the `gpu` queue (device cuda) or `cpu` (cpu, auto). Answers 202 with
    `Location: /v1/jobs/{id}`; poll that until `status` is succeeded, failed or cancelled.
    When no live worker consumes that queue (say `cuda` with no GPU worker), the job is queued
    all the same and the answer carries a `Warning` header naming the device and the fix."""
    job, replayed = runs.submit_owned(
        store,
        spec,
        route,
        task=RUN_JOB_TASK,
        location=router.prefix,
        idempotency_key=idempotency_key,
        check=lambda held: references.check(spec, held, route.settings),
        response=response,
    )
    if not replayed:
        return with_new_prediction(job)
    return (await run_in_threadpool(with_predictions, [job], store, studies))[0]


@router.get("", response_model=JobPage, summary="List jobs", responses=problems(422))
def list_jobs(
    store: JobsDep,
    studies: StudiesDep,
    query: runs.RunQueryDep,
) -> JobPage:
    """Newest first. Follow `next_cursor` until it is null."""
    items, next_cursor = runs.page(store, query)
    return JobPage(items=with_predictions(items, store, studies), next_cursor=next_cursor)


StudyQuery = Annotated[
    str | None,
    Query(
        description="Predict from this study (the job must be one of its members). Without "
        "it, a job in several studies gets each one's prediction in `prediction.studies` and "
        "no single gap.",
    ),
]


@router.get("/{id}", response_model=Job, summary="Read a job", responses=problems(404, 422))
async def get_job(
    job: ExistingJob,
    store: JobsDep,
    studies: StudiesDep,
    tenant: CallerDep,
    owners: OwnersDep,
    study: StudyQuery = None,
) -> Job:
    """`prediction` says what can honestly be said about the job's generalization gap: a
    calibrated prediction with its interval inside a study, otherwise why there is none.
    `prediction.selection` says how the study was chosen; `?study=<id>` names one. An unknown
    study, or one the job is not a member of, is a 422 naming `query.study`."""
    asked = study
    if study is not None and not tenant.reads_all and owners.owner("study", study) != tenant.name:
        study = NO_STUDY  # another tenant's study reads as one that does not exist
    try:
        # reads Redis and may run a study's analysis: not on the event loop
        return (await run_in_threadpool(with_predictions, [job], store, studies, study))[0]
    except StudyChoiceError as e:
        raise invalid("query.study", str(e).replace(NO_STUDY, str(asked))) from e


@router.post(
    "/{id}/cancel",
    response_model=Job,
    summary="Cancel a job",
    responses=CANCEL_RESPONSES,
)
def cancel_job(
    job: ExistingJob,
    store: JobsDep,
    studies: StudiesDep,
    route: runs.RunRouteDep,
    response: Response,
) -> Job:
    """A queued job is cancelled at once (**200**, status cancelled; its message is skipped
    when a worker takes it). A running job gets `cancel_requested: true` and the worker stops
    it between iterations (**202**; poll until status is cancelled). Cancelling a cancelled
    job is a no-op (**200**). A succeeded or failed job cannot be cancelled (**409**). A
    running job whose worker stopped beating is cancelled at once (**200**)."""
    job = runs.cancel(store, job, route, response)
    return with_predictions([job], store, studies)[0]


@router.delete("/{id}", status_code=204, summary="Delete a job", responses=problems(404, 409, 422))
def delete_job(job: ExistingJob, store: JobsDep, tenant: CallerDep, owners: OwnersDep) -> Response:
    """Remove a finished (succeeded, failed or cancelled) job's record. A queued or running
    job is kept (**409**, `not-finished`): cancel it first, then delete it. Its model and
    dataset stay uploaded."""
    if not job.status.terminal:
        raise ProblemError(
            409,
            "not-finished",
            f"id: job {job.id} is {job.status.value}; cancel it first (POST /v1/jobs/{job.id}"
            f"/cancel, or sharpness jobs cancel {job.id}), then delete it",
        )
    ownership.record_delete(store, owners, job.id, tenant)
    return Response(status_code=204)

"""`GET /v1/jobs/{id}/compare?baseline={id}`: a finished job against a finished baseline.

The comparison itself is service.jobs.compare; this route finds both records (the baseline
through the same lookup as the job, so it answers 404 for an id the caller cannot read), refuses
unfinished ones and reads the models' formats from their upload records for the caveats.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.common import RECORD_ID_PATTERN, ExistingJob, existing_job, problems
from service.deps import BlobsDep, JobsDep
from service.jobs.compare import Comparison, compare
from service.problems import ProblemError, invalid
from tasks.contract.runs import JobStatus
from tasks.contract.spec import Job
from tasks.store.blobs import BlobStore

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

BaselineQuery = Annotated[
    str,
    Query(pattern=RECORD_ID_PATTERN, description="Id of the job to compare with (the baseline)."),
]


@router.get(
    "/{id}/compare",
    response_model=Comparison,
    summary="Compare a job with a baseline job",
    responses=problems(404, 409, 422),
)
async def compare_jobs(
    job: ExistingJob, baseline: BaselineQuery, store: JobsDep, blobs: BlobsDep
) -> Comparison:
    """Per measure that both jobs have with a number as value: both values, the difference,
    the ratio, each error bar (the 95% interval when the result has one, else value ±
    error_estimate) and `exceeds_error_bars`, true when the two bars do not overlap. Caveats
    say what may make the comparison mislead (different data, model format, loss, mode or
    measure parameters; a result that did not converge). **404** when either job does not
    exist (`detail` names `id` or `baseline`); **409** `not-finished` while either is queued
    or running, or when one did not succeed; **422** when the two have no measure in common."""
    try:
        base = await existing_job(baseline, store)
    except ProblemError as e:
        raise ProblemError(404, "not-found", f"baseline: no job {baseline}") from e
    for which, record in (("id", job), ("baseline", base)):
        _check_succeeded(which, record)
    result = compare(job, base, _model_format(blobs, job), _model_format(blobs, base))
    if not result.measures:
        raise invalid(
            "query.baseline",
            f"jobs {job.id} and {base.id} have no measure with a number as value in common "
            f"(not compared: {', '.join(f'{k}: {v}' for k, v in result.not_compared.items())})",
        )
    return result


def _check_succeeded(which: str, job: Job) -> None:
    if job.status == JobStatus.succeeded:
        return
    retry = {} if job.status.terminal else {"Retry-After": "2"}
    raise ProblemError(
        409,
        "not-finished",
        f"{which}: job {job.id} is {job.status.value}; only succeeded jobs are compared",
        headers=retry or None,
    )


def _model_format(blobs: BlobStore, job: Job) -> str | None:
    record = blobs.meta("models", job.spec.model)
    fmt = record.get("format") if record else None
    return fmt if isinstance(fmt, str) else None

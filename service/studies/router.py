"""Studies: a sweep of related jobs whose gaps calibrate the measures; create, read (with the
analysis), list, delete, and plot a measure against the gaps."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from service.common import ExistingStudy, StudyId, not_found, problems
from service.deps import CallerDep, JobsDep, OwnersDep, StudiesDep
from service.plots.responses import png_openapi, png_response
from service.problems import ProblemError, field_error, invalid
from service.studies import service
from service.studies.schemas import MIN_MODELS, Study, StudyCreate, StudyPage
from service.tenants import ownership
from service.tenants.listing import owned_page

router = APIRouter(prefix="/v1/studies", tags=["studies"])
STUDY = "study"  # the owners' kind of a study (service.tenants.access)


def _any(record: object) -> bool:
    return True


CREATE_DOC = f"""Group finished (or running) jobs into a study: a sweep of related models, each
with the hyperparameters it was trained with and, where known, its observed test metrics.

A member's gap is its job's train accuracy (`evaluation.accuracy`) minus the `test_accuracy`
given here, else the gap measured on the job's `eval_dataset` (`evaluation.gap`); for
`target: loss_gap`, test loss minus train loss. Members without either are predicted.

Jobs on the same uploaded model count as one model; members given the same `group` (e.g. the
seeds of one configuration) are held out and resampled together.

Once {MIN_MODELS} members have succeeded with a gap, `GET /v1/studies/{{id}}` shows how well
each measure ranks the gaps (Kendall τ, granulated Ψ, conditional mutual information, with
permutation p-values Holm-corrected across the measures and bootstrap intervals) next to
trivial baselines (1/learning_rate, learning_rate/batch_size, ‖w‖), leave-one-out errors of a
measure predictor, a baseline predictor and the mean gap, conformal intervals (flagged and
widened outside the study's range), the gaps' spread against the test sets' binomial noise, a
verdict in plain words, and a prediction per member. Answers **201** with `Location`."""


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Resubmitting with the same key (for 24 h) returns the study made the "
        "first time; a different body under a used key is a 409.",
    ),
]


@router.post(
    "",
    status_code=201,
    response_model=Study,
    summary="Create a study",
    description=CREATE_DOC,
    responses=problems(400, 409, 413, 422),
)
def create_study(
    body: StudyCreate,
    response: Response,
    jobs: JobsDep,
    studies: StudiesDep,
    tenant: CallerDep,
    owners: OwnersDep,
    idempotency_key: IdempotencyKey = None,
) -> Study:
    """Members must be the caller's own jobs (any job for an admin)."""
    seen: dict[str, int] = {}
    errors = []
    for i, member in enumerate(body.jobs):
        field = f"jobs.{i}.job"
        if member.job in seen:
            errors.append(
                field_error(field, f"job {member.job} is already jobs.{seen[member.job]}")
            )
        elif jobs.status(member.job) is None or not (
            tenant.acts_on_all or owners.owner(jobs.KIND, member.job) == tenant.name
        ):
            errors.append(field_error(field, f"no job {member.job}", "unknown"))
        seen.setdefault(member.job, i)
    if errors:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise ProblemError(422, "invalid-field", detail, errors=errors)
    record, created = studies.create(body, ownership.scoped_key(tenant, idempotency_key))
    if created:
        ownership.claim(owners, STUDY, record.id, tenant, record.created_at)
    response.headers["Location"] = f"/v1/studies/{record.id}"
    if not created:
        mine = (record.name, record.target, record.level, record.jobs)
        if mine != (body.name, body.target, body.level, body.jobs):
            raise ProblemError(
                409,
                "idempotency-key-reused",
                f"Idempotency-Key: already used for study {record.id} with a different body",
            )
        response.headers["Idempotent-Replayed"] = "true"
    return service.evaluate(record, jobs)[0]


@router.get("", response_model=StudyPage, summary="List studies", responses=problems(422))
def list_studies(
    studies: StudiesDep,
    tenant: CallerDep,
    owners: OwnersDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> StudyPage:
    """Newest first, without the analysis (read one study for that)."""
    try:
        if tenant.reads_all:
            records, next_cursor = studies.list(limit=limit, cursor=cursor)
        else:
            records, next_cursor = owned_page(
                owners, STUDY, tenant.name, studies.get, _any, limit, cursor
            )
    except ValueError as e:
        raise invalid("query.cursor", str(e)) from e
    return StudyPage(items=[service.summary(r) for r in records], next_cursor=next_cursor)


@router.get("/{id}", response_model=Study, summary="Read a study", responses=problems(404, 422))
def get_study(record: ExistingStudy, jobs: JobsDep) -> Study:
    """The members' states and, once enough have gaps, the analysis (recomputed as jobs
    finish)."""
    return service.evaluate(record, jobs)[0]


@router.delete("/{id}", status_code=204, summary="Delete a study", responses=problems(404, 422))
def delete_study(
    id: StudyId, studies: StudiesDep, tenant: CallerDep, owners: OwnersDep
) -> Response:
    """Deletes the study only; its jobs stay."""
    if not studies.delete(id):
        raise not_found("study", id)
    owners.forget(STUDY, id, tenant.name)
    return Response(status_code=204)


@router.get(
    "/{id}/plot.png",
    summary="Plot a measure against the gaps",
    response_class=Response,
    responses=png_openapi("One point per observed model: the measure against its gap.")
    | problems(404, 409, 422),
)
def plot_study(
    record: ExistingStudy,
    jobs: JobsDep,
    measure: Annotated[str, Query(description="A measure or baseline of the analysis.")],
    baseline: Annotated[
        str | None, Query(description="A baseline to draw beside it on a second axis.")
    ] = None,
) -> Response:
    """One point per observed model (x: the measure, y: its gap), Kendall τ in the title;
    `baseline` (e.g. `1/learning_rate`) adds a trivial baseline on a second axis. **409**
    while the study has no analysis yet."""
    from service.plots.study import render_study_scatter  # deferred: matplotlib only when drawing

    study, outcome = service.evaluate(record, jobs)
    if outcome is None:
        raise ProblemError(
            409, "not-analysed", f"id: study {record.id} has no analysis yet: {study.message}"
        )
    data = service.plot_data(record, jobs, measure, baseline)
    if data is None:
        known = [r.name for r in outcome.analysis.measures + outcome.analysis.baselines]
        field = "query.measure" if measure not in known else "query.baseline"
        raise invalid(field, f"not in this study's analysis; known: {', '.join(known)}")
    return png_response(render_study_scatter(**data))

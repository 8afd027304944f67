"""Trajectories: submit checkpoints of one run (202 + Location), read, list, cancel, picture.

Mirrors the jobs router (same idempotency, enqueue-or-fail and cancel semantics) on the
TrajectoryStore; the worker runs them with the `sharpness.run_trajectory` task.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from service import references
from service.deps import BlobsDep, CeleryDep, SettingsDep, TrajectoriesDep
from service.enqueue import enqueue_or_fail
from service.plots.responses import png_openapi, png_response
from service.problems import ProblemError, invalid
from service.routers.common import ExistingTrajectory, problems
from tasks.celery_app import RUN_TRAJECTORY_TASK, queue_for
from tasks.spec import JobSpec, JobStatus, Trajectory, TrajectoryPage, TrajectorySpec
from tasks.trajectorystore import TrajectoryStore

log = logging.getLogger("sharpness.gateway")

router = APIRouter(prefix="/v1/trajectories", tags=["trajectories"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Resubmitting with the same key (for 24 h) returns the trajectory made the "
        "first time and enqueues nothing. A different spec under a used key is a 409.",
    ),
]


StoreDep = TrajectoriesDep


def _check_references(spec: TrajectorySpec, blobs: BlobsDep, settings: SettingsDep) -> None:
    """Every checkpoint's model uploaded (422 naming `checkpoints.N.model`); the dataset
    checked exactly as a job's is (`dataset.id`, `dataset.uri`, keys)."""
    for i, cp in enumerate(spec.checkpoints):
        if blobs.meta("models", cp.model) is None:
            raise invalid(
                f"checkpoints.{i}.model",
                f"no uploaded model {cp.model}; upload it with POST /v1/models",
                "unknown",
            )
    as_job = JobSpec.model_construct(model=spec.checkpoints[0].model, dataset=spec.dataset)
    references.check(as_job, blobs, settings)


def _enqueue(celery: CeleryDep, store: TrajectoryStore, t: Trajectory) -> None:
    enqueue_or_fail(celery, store, RUN_TRAJECTORY_TASK, t.id, t.queue, "trajectory")


@router.post(
    "",
    status_code=202,
    response_model=Trajectory,
    summary="Submit a trajectory",
    responses=problems(409, 422, 503),
)
def submit_trajectory(
    spec: TrajectorySpec,
    response: Response,
    store: StoreDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    celery: CeleryDep,
    idempotency_key: IdempotencyKey = None,
) -> Trajectory:
    """Checkpoints of one training run, in order, each with the learning rate η it was
    trained at. The worker measures, per checkpoint, λmax, the top-`k` eigenvalues and
    λmax·η/2 (above 1: beyond the edge of stability 2/η), and between consecutive
    checkpoints the overlap of the top eigenvector |⟨v₁(t), v₁(t+1)⟩| and of the top-k
    subspace ‖V_tᵀV_{t+1}‖²_F/k (Wang & Roberts 2024). All checkpoints must share parameter
    names and shapes. Answers 202 with `Location: /v1/trajectories/{id}`."""
    _check_references(spec, blobs, settings)
    t = store.create(spec, queue_for(spec.device), idempotency_key)
    response.headers["Location"] = f"/v1/trajectories/{t.id}"
    if idempotency_key:
        if t.spec.model_dump() != spec.model_dump():
            raise ProblemError(
                409,
                "idempotency-key-reused",
                f"Idempotency-Key: already used for trajectory {t.id} with a different spec",
            )
        if not store.mark_enqueued(t.id):
            response.headers["Idempotent-Replayed"] = "true"
            return t
    _enqueue(celery, store, t)
    return t


@router.get("", response_model=TrajectoryPage, summary="List trajectories", responses=problems(422))
def list_trajectories(
    store: StoreDep,
    status: Annotated[JobStatus | None, Query(description="Only those in this state.")] = None,
    label: Annotated[
        list[str] | None, Query(description="key:value; repeat for several (all must match).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> TrajectoryPage:
    """Newest first. Follow `next_cursor` until it is null."""
    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise invalid("query.label", f"{item!r} is not key:value")
        labels[key] = value
    try:
        return store.list(status=status, labels=labels, limit=limit, cursor=cursor)
    except ValueError as e:
        raise invalid("query.cursor", str(e)) from e


@router.get(
    "/{id}", response_model=Trajectory, summary="Read a trajectory", responses=problems(404, 422)
)
def get_trajectory(t: ExistingTrajectory) -> Trajectory:
    return t


@router.post(
    "/{id}/cancel",
    response_model=Trajectory,
    summary="Cancel a trajectory",
    responses={202: {"model": Trajectory, "description": "Running: the worker will stop it"}}
    | problems(404, 409, 422),
)
def cancel_trajectory(t: ExistingTrajectory, store: StoreDep, response: Response) -> Trajectory:
    """Queued: cancelled at once (**200**). Running: `cancel_requested`, the worker stops
    between Lanczos iterations and keeps the points measured so far (**202**). Cancelled:
    no-op (**200**). Succeeded or failed: **409**."""
    id = t.id
    if t.status != JobStatus.cancelled:
        t = store.request_cancel(id) or t  # type: ignore[assignment]
    if t.status in (JobStatus.succeeded, JobStatus.failed):
        raise ProblemError(409, "already-finished", f"id: trajectory {id} already {t.status.value}")
    response.status_code = 200 if t.status == JobStatus.cancelled else 202
    return t


@router.get(
    "/{id}/plot.png",
    response_class=Response,
    summary="Trajectory picture",
    responses=png_openapi(
        "Top: λmax·η/2 per checkpoint with the edge of stability at 1. Bottom: top-eigenvector "
        "and top-k subspace overlaps between consecutive checkpoints."
    )
    | problems(404, 409, 422),
)
def trajectory_png(t: ExistingTrajectory) -> Response:
    """Drawn from the points measured so far: a running trajectory gives a partial picture.
    **409** while no checkpoint has been measured yet; **404** when the trajectory does not
    exist or finished without measuring any checkpoint."""
    id = t.id
    if not t.points:
        if not t.status.terminal:
            raise ProblemError(
                409,
                "not-finished",
                f"id: trajectory {id} is {t.status.value} and has measured no checkpoint yet",
                headers={"Retry-After": "2"},
            )
        raise ProblemError(
            404, "no-result", f"id: trajectory {id} {t.status.value} without measuring any point"
        )
    from service.plots.trajectory import render_trajectory

    use_steps = all(p.step is not None for p in t.points)
    xs = [float(p.step if use_steps else p.index) for p in t.points]  # type: ignore[arg-type]
    by_end = {o.end: o for o in t.overlaps}
    later = [p.index for p in t.points[1:]]
    total = len(t.spec.checkpoints)
    title = f"Trajectory {id[:8]}: {len(t.points)}/{total} checkpoints, {t.status.value}"
    png = render_trajectory(
        xs,
        [p.stability_ratio for p in t.points],
        [by_end[i].top_overlap if i in by_end else None for i in later],
        [by_end[i].subspace_overlap if i in by_end else None for i in later],
        k=t.spec.k,
        x_label="training step" if use_steps else "checkpoint",
        title=title,
    )
    return png_response(png)

"""Trajectories: submit checkpoints of one run (202 + Location), read, list, cancel, picture;
and the optimizer states that Adam trajectories need (upload, read).

Mirrors the jobs router (same idempotency, enqueue-or-fail and cancel semantics) on the
TrajectoryStore; the worker runs them with the `sharpness.run_trajectory` task.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response

from service import runs
from service.blobs import references
from service.common import ExistingTrajectory, problems
from service.deps import (
    SettingsDep,
    TrajectoriesDep,
)
from service.ops import consumers
from service.plots.responses import png_openapi, png_response
from service.problems import ProblemError, invalid
from service.tenants.holdings import HeldBlobs
from service.trajectories import optimizer_states
from tasks.app import RUN_TRAJECTORY_TASK
from tasks.contract.spec import (
    JobSpec,
    OptimizerSpec,
    Trajectory,
    TrajectoryPage,
    TrajectorySpec,
)

log = logging.getLogger("sharpness.gateway")

router = APIRouter(prefix="/v1/trajectories", tags=["trajectories"])

StoreDep = TrajectoriesDep


def _check_references(spec: TrajectorySpec, blobs: HeldBlobs, settings: SettingsDep) -> None:
    """Every checkpoint's model uploaded (422 naming `checkpoints.N.model`); the dataset
    checked exactly as a job's is (`dataset.id`, `dataset.uri`, keys)."""
    for i, cp in enumerate(spec.checkpoints):
        if blobs.meta("models", cp.model) is None:
            raise invalid(
                f"checkpoints.{i}.model",
                f"no uploaded model {cp.model}; upload it with POST /v1/models",
                "unknown",
            )
    for i, cp in enumerate(spec.checkpoints):
        if (
            cp.optimizer_state is not None
            and blobs.meta(optimizer_states.KIND, cp.optimizer_state) is None
        ):
            raise invalid(
                f"checkpoints.{i}.optimizer_state",
                f"no uploaded optimizer state {cp.optimizer_state}; upload it with POST "
                "/v1/trajectories/optimizer-states",
                "unknown",
            )
    as_job = JobSpec.model_construct(model=spec.checkpoints[0].model, dataset=spec.dataset)
    references.check(as_job, blobs, settings)


@router.post(
    "",
    status_code=202,
    response_model=Trajectory,
    summary="Submit a trajectory",
    responses=problems(400, 409, 413, 422, 503) | consumers.SUBMIT_WARNING,
)
async def submit_trajectory(
    spec: TrajectorySpec,
    response: Response,
    store: StoreDep,
    route: runs.RunRouteDep,
    idempotency_key: runs.IdempotencyKey = None,
) -> Trajectory:
    """Checkpoints of one training run, in order, each with the learning rate η it was
    trained at, and the run's `optimizer`. The worker measures, per checkpoint, λmax, the
    top-`k` eigenvalues and the stability ratio against that optimizer's edge: 2/η for
    gradient descent (ratio λmax·η/2), (2+2β)/η for heavy-ball momentum β, (2+2β)/((1+2β)η)
    for Nesterov, and for Adam λmax(P⁻¹H) against (2+2β₁)/((1−β₁)η), P from each
    checkpoint's `optimizer_state` (upload it first with POST
    /v1/trajectories/optimizer-states). Between consecutive checkpoints: the overlap of the
    top eigenvector |⟨v₁(t), v₁(t+1)⟩| and of the top-k subspace ‖V_tᵀV_{t+1}‖²_F/k
    (Wang & Roberts 2024), and in `edge_analysis` those of steps past the edge apart from
    those below it. All checkpoints must share parameter names and shapes. Answers 202 with
    `Location: /v1/trajectories/{id}`, and a `Warning` header when no live worker consumes
    its queue (as a job's submit)."""
    t, _ = runs.submit_owned(
        store,
        spec,
        route,
        task=RUN_TRAJECTORY_TASK,
        location=router.prefix,
        idempotency_key=idempotency_key,
        check=lambda held: _check_references(spec, held, route.settings),
        response=response,
    )
    return t


@router.get("", response_model=TrajectoryPage, summary="List trajectories", responses=problems(422))
def list_trajectories(
    store: StoreDep,
    query: runs.RunQueryDep,
) -> TrajectoryPage:
    """Newest first. Follow `next_cursor` until it is null."""
    items, next_cursor = runs.page(store, query)
    return TrajectoryPage(items=items, next_cursor=next_cursor)


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
def cancel_trajectory(
    t: ExistingTrajectory,
    store: StoreDep,
    route: runs.RunRouteDep,
    response: Response,
) -> Trajectory:
    """Queued: cancelled at once (**200**). Running: `cancel_requested`, the worker stops
    between Lanczos iterations and keeps the points measured so far (**202**); a running one
    whose worker stopped beating is cancelled at once (**200**). Cancelled: no-op (**200**).
    Succeeded or failed: **409**."""
    t = runs.cancel(store, t, route, response)
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
    # deferred: matplotlib loads only when a picture is drawn
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
        **_edge_labels(t.spec.optimizer),
    )
    return png_response(png)


def _edge_labels(o: OptimizerSpec) -> dict[str, str]:
    """The picture's ratio axis and edge line for the run's optimizer."""
    if o.name == "adam":
        return {
            "ratio_label": "λmax(P⁻¹H) / edge",
            "edge_label": f"edge λmax(P⁻¹H) = (2+2β₁)/((1−β₁)η), β₁ = {o.beta1:g}",
        }
    if o.name == "sgd" and o.momentum > 0:
        kind = "Nesterov, (2+2β)/((1+2β)η)" if o.nesterov else "heavy ball, (2+2β)/η"
        return {
            "ratio_label": "λmax / edge",
            "edge_label": f"edge of stability, {kind}, β = {o.momentum:g}",
        }
    return {}

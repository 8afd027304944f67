"""Trajectories: submit checkpoints of one run (202 + Location), read, list, cancel, picture;
and the optimizer states that Adam trajectories need (upload, read).

Mirrors the jobs router (same idempotency, enqueue-or-fail and cancel semantics) on the
TrajectoryStore; the worker runs them with the `sharpness.run_trajectory` task.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import Field

from service.blobs import references, uploads
from service.blobs.formats import Refused
from service.blobs.formats import safetensors as st
from service.blobs.schemas import BlobInfo
from service.common import ExistingTrajectory, _existing_blob, problems
from service.deps import BlobsDep, CeleryDep, SettingsDep, TrajectoriesDep
from service.plots.responses import png_openapi, png_response
from service.problems import ProblemError, invalid
from service.runs import enqueue_or_fail
from tasks.celery_app import RUN_TRAJECTORY_TASK, queue_for
from tasks.spec import (
    JobSpec,
    JobStatus,
    OptimizerSpec,
    Trajectory,
    TrajectoryPage,
    TrajectorySpec,
)
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

STATE_KIND = "optimizer_states"
STATE_PREFIX = "exp_avg_sq."
STATE_HOW = (
    "save Adam's state by parameter name: safetensors.torch.save_file({'step': "
    "torch.tensor([t]), **{'exp_avg_sq.' + name: opt.state[p]['exp_avg_sq'] for name, p in "
    "model.named_parameters()}}, 'state.safetensors') (the SDK's optimizer_state_file does it)"
)


class OptimizerStateInfo(BlobInfo):
    format: Literal["safetensors"]
    parameters: list[str] = Field(description="Parameter names with an exp_avg_sq tensor.")
    step_dtype: str = Field(description="dtype of the stored step.")


def inspect_optimizer_state(path: Path, label: str) -> dict[str, Any]:
    """Torch-free check of an optimizer-state upload: safetensors holding a one-element `step`
    and `exp_avg_sq.<parameter name>` tensors of a floating dtype, nothing else."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(16)
    if not st.looks_like(head, size):
        raise Refused(415, "unknown-format", f"{label}: not a safetensors file; {STATE_HOW}")
    tensors = st.read_header(path, label)
    step = tensors.get("step")
    if step is None or _numel(step["shape"]) != 1:
        raise Refused(
            422, "corrupt", f"{label}: needs a one-element tensor 'step'; {STATE_HOW}", "file"
        )
    names = sorted(n[len(STATE_PREFIX) :] for n in tensors if n.startswith(STATE_PREFIX))
    if not names:
        raise Refused(
            422, "corrupt", f"{label}: no '{STATE_PREFIX}<parameter>' tensors; {STATE_HOW}", "file"
        )
    other = sorted(n for n in tensors if n != "step" and not n.startswith(STATE_PREFIX))
    if other:
        raise Refused(
            422,
            "corrupt",
            f"{label}: unexpected tensors {other[:5]}; expected 'step' and "
            f"'{STATE_PREFIX}<parameter>' only",
            "file",
        )
    bad = [n for n in names if not tensors[STATE_PREFIX + n]["dtype"].startswith(("float", "bf"))]
    if bad:
        raise Refused(
            422, "unsupported-dtype", f"{label}: {STATE_PREFIX}{bad[0]} is not floating", "file"
        )
    return {"format": "safetensors", "parameters": names, "step_dtype": step["dtype"]}


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


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
    for i, cp in enumerate(spec.checkpoints):
        if cp.optimizer_state is not None and blobs.meta(STATE_KIND, cp.optimizer_state) is None:
            raise invalid(
                f"checkpoints.{i}.optimizer_state",
                f"no uploaded optimizer state {cp.optimizer_state}; upload it with POST "
                "/v1/trajectories/optimizer-states",
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
    trained at, and the run's `optimizer`. The worker measures, per checkpoint, λmax, the
    top-`k` eigenvalues and the stability ratio against that optimizer's edge: 2/η for
    gradient descent (ratio λmax·η/2), (2+2β)/η for heavy-ball momentum β, (2+2β)/((1+2β)η)
    for Nesterov, and for Adam λmax(P⁻¹H) against (2+2β₁)/((1−β₁)η), P from each
    checkpoint's `optimizer_state` (upload it first with POST
    /v1/trajectories/optimizer-states). Between consecutive checkpoints: the overlap of the
    top eigenvector |⟨v₁(t), v₁(t+1)⟩| and of the top-k subspace ‖V_tᵀV_{t+1}‖²_F/k
    (Wang & Roberts 2024), and in `edge_analysis` those of steps past the edge apart from
    those below it. All checkpoints must share parameter names and shapes. Answers 202 with
    `Location: /v1/trajectories/{id}`."""
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


@router.post(
    "/optimizer-states",
    response_model=OptimizerStateInfo,
    status_code=201,
    summary="Upload an optimizer state",
    responses={200: {"model": OptimizerStateInfo, "description": "Already stored"}}
    | problems(400, 413, 415, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)
async def upload_optimizer_state(
    request: Request, response: Response, blobs: BlobsDep, settings: SettingsDep
) -> OptimizerStateInfo:
    """Multipart form, `file`: a `.safetensors` of Adam's state at one checkpoint, a
    one-element `step` (t) and `exp_avg_sq.<parameter name>` (v_t, the parameter's shape)
    for every parameter. Reference its id as the checkpoint's `optimizer_state`. Idempotent
    by content: **201** when new, **200** when stored before."""
    received = await uploads.receive(request, blobs, STATE_KIND, settings.max_upload_bytes, set())
    facts = await uploads.inspect(blobs, received, inspect_optimizer_state)
    record, created = blobs.commit(
        received.staged, {"kind": "optimizer_state", "filename": received.filename, **facts}
    )
    response.status_code = 201 if created else 200
    return OptimizerStateInfo.model_validate(record)


ExistingOptimizerState = Annotated[
    dict[str, Any], Depends(_existing_blob(STATE_KIND, "optimizer state"))
]


@router.get(
    "/optimizer-states/{id}",
    response_model=OptimizerStateInfo,
    summary="Read an optimizer state's record",
    responses=problems(404, 422),
)
def get_optimizer_state(record: ExistingOptimizerState) -> OptimizerStateInfo:
    return OptimizerStateInfo.model_validate(record)


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

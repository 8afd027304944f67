"""What a trajectory does: each checkpoint's top-k eigenpairs, in order (its Celery task is
tasks.trajectories).

It runs inside the one run wrapper (tasks.worker.run), as jobs do: the same exactly-once
guard, run lock, attempts, progress throttling, cancellation, limits and problems. Each
checkpoint is measured through the engine's runner (`Run.measure`, tasks.engine.runner), so
its warnings and mode notes read as a job measure's do. What differs is the loop: one
checkpoint at a time is loaded, measured and dropped; only its eigenvectors (dim×k float64)
stay in this process, in the engine's TrajectoryTracker, until the next checkpoint's overlap
is computed. They never go to Redis. Each checkpoint's point is appended to the record as soon
as it is known, so a cancelled or failed trajectory keeps what it measured.

The optimizer sets the edge (tasks.engine.stability): for Adam each checkpoint's optimizer state
(`exp_avg_sq.<name>`, `step`; an uploaded safetensors blob) gives the preconditioner P, and the
eigenpairs are those of P⁻¹H, with λmax of H measured beside them. Each point says which mode
the model was measured in and why (`mode_reason`).

Every error names the checkpoint at fault (`checkpoints[2].model: ...`) in an RFC 9457
problem.
"""

from __future__ import annotations

import gc
import logging
from functools import partial
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from tasks.contract.spec import EigenvectorOverlap, Trajectory, TrajectoryPoint, TrajectorySpec
from tasks.engine.preconditioner import (
    OptimizerStateError,
    adam_preconditioner,
    state_from_tensors,
)
from tasks.engine.problem import HessianProblem
from tasks.engine.trajectory import (
    ShapeMismatch,
    TrajectoryTracker,
    named_shapes,
    top_eigenpairs,
)
from tasks.store.trajectories import TrajectoryStore
from tasks.worker import run as runs
from tasks.worker.errors import CheckpointMismatch, LoadError, at
from tasks.worker.evaluation import evaluate
from tasks.worker.loading import (
    apply_precision,
    cast_note,
    check_fit,
    make_problem,
    read_dataset,
    stored_model,
)
from tasks.worker.run import Run
from tasks.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

KEPT = "the points of the checkpoints before it are kept"


class _Data:
    """The trajectory's dataset, read once per model dtype (checkpoints usually share one)."""

    def __init__(self, rt: WorkerRuntime, spec: TrajectorySpec) -> None:
        self.rt, self.spec = rt, spec
        self._by_dtype: dict[Any, list] = {}
        self.name = "the dataset"

    def batches(self, dtype: Any) -> list:
        if dtype not in self._by_dtype:
            try:
                batches, self.name = read_dataset(
                    self.rt, self.spec, self.spec.dataset, "dataset", dtype
                )
            except LoadError as e:
                raise at("dataset", e) from e
            self._by_dtype[dtype] = batches
        return self._by_dtype[dtype]


def _build(
    rt: WorkerRuntime, t: Trajectory, data: _Data, index: int, device: str
) -> tuple[HessianProblem, dict[str, str] | None]:
    """Load checkpoint `index`, cast to the spec's `precision`, and make its HessianProblem;
    with it, what the cast did. Errors name the checkpoint."""
    where = f"checkpoints[{index}].model"
    model_id = t.spec.checkpoints[index].model
    try:
        model = stored_model(rt, model_id)
        if model is None:
            raise LoadError("Model not found", f"model {model_id} is not in the blob store")
        apply_precision(model, t.spec.precision)
        batches = data.batches(model.dtype)
        try:
            check_fit(t.spec, model, batches, data.name)
        except LoadError as e:
            raise type(e)(e.title, e.detail + cast_note(model), e.status, e.kind) from e
    except LoadError as e:
        raise e if e.detail.startswith("dataset:") else at(where, e) from e
    return make_problem(t.spec, model.module, batches, device), model.precision


def _preconditioner(rt: WorkerRuntime, t: Trajectory, index: int, prob: Any) -> Any:
    """Adam's diag(P) at checkpoint `index` from its uploaded state; errors name the field."""
    where = f"checkpoints[{index}].optimizer_state"
    state_id = t.spec.checkpoints[index].optimizer_state
    if state_id is None or rt.blobs.meta("optimizer_states", state_id) is None:
        raise LoadError(
            "Optimizer state not found", f"{where}: optimizer state {state_id} is not stored"
        )
    o = t.spec.optimizer
    try:
        tensors = load_file(str(rt.blobs.path("optimizer_states", state_id)))
        v, step = state_from_tensors(tensors)
        return adam_preconditioner(prob, v, step, o.beta1, o.beta2, o.eps)
    except (SafetensorError, OptimizerStateError) as e:
        raise LoadError("Optimizer state does not fit the model", f"{where}: {e}") from e


def mode_reason(module: Any, mode: str, fixed_at_export: bool) -> str:
    """Which mode the curvature was measured in, why, and what it means for this model."""
    kinds = set()
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            kinds.add("BatchNorm")
        elif isinstance(m, nn.modules.dropout._DropoutNd):
            kinds.add("dropout")
    if fixed_at_export:
        return (
            "a torch.export model keeps the train/eval behaviour it was exported with; the "
            f"requested mode {mode!r} could not be applied"
        )
    if not kinds:
        return (
            f"{mode}: the model has no BatchNorm or dropout (that this check can see), so "
            "train and eval mode measure the same objective"
        )
    has = " and ".join(sorted(kinds))
    if mode == "train":
        return (
            f"train (requested): the training objective, which the edge of stability concerns; "
            f"the model's {has} run as in training (batch statistics, active dropout), so the "
            "values depend on the batching (dataset.batch_size)"
        )
    return (
        f"eval (the default): the model's {has} run as at inference (running statistics, no "
        "dropout), so λmax is a property of the weights alone; the edge of stability concerns "
        "the training objective, which mode 'train' measures"
    )


def measure_trajectory(run: Run) -> None:
    """The trajectory's work inside the run wrapper: each checkpoint in order, its point
    appended to the record as soon as it is measured."""
    rt, t = run.rt, run.record
    store: TrajectoryStore = run.store  # type: ignore[assignment]
    spec = t.spec
    run.write(lambda _: store.reset_results(t.id, run.epoch))
    tracker = TrajectoryTracker(k=spec.k)
    data = _Data(rt, spec)
    opt = spec.optimizer
    for index, cp in enumerate(spec.checkpoints):
        hooks = run.step(index, f"checkpoints[{index}]")
        prob, precision = _build(rt, t, data, index, run.device)
        shapes = named_shapes(prob.names, prob.shapes)
        try:
            tracker.check(shapes)
        except ShapeMismatch as e:
            raise CheckpointMismatch(
                "Checkpoints do not match",
                f"checkpoints[{index}].model: {e}; every checkpoint of a trajectory must "
                "have the parameter names and shapes of checkpoints[0], so that their "
                "eigenvectors can be compared",
            ) from e
        ev = evaluate(prob, data.name)
        pre = _preconditioner(rt, t, index, prob) if opt.name == "adam" else None

        def eigenpairs(ctx: Any, prob: Any = prob, pre: Any = pre) -> dict[str, Any]:
            pairs = top_eigenpairs(
                prob, spec.k, spec.tol, spec.max_iter, ctx=ctx, preconditioner=pre
            )
            out = {"value": pairs.eigenvalues[0], "converged": pairs.converged, "pairs": pairs}
            out["hvps"] = pairs.hvps
            if pre is not None:  # λmax of H itself, beside P⁻¹H's
                raw = top_eigenpairs(prob, 1, spec.tol, spec.max_iter, ctx=ctx)
                out["hessian_lambda_max"], out["hvps"] = raw.eigenvalues[0], pairs.hvps + raw.hvps
            return out

        res = run.measure(prob, eigenpairs)
        point, overlap = tracker.add(
            shapes,
            res["pairs"],
            cp.learning_rate,
            opt.model_dump(),
            hessian_lambda_max=res.get("hessian_lambda_max"),
        )
        point["hvps"] = res["hvps"]
        found = TrajectoryPoint(
            index=index,
            model=cp.model,
            step=cp.step,
            learning_rate=cp.learning_rate,
            dim=prob.dim,
            loss=ev.get("loss"),
            accuracy=ev.get("accuracy"),
            warnings=res["warnings"],
            mode=spec.mode,
            mode_reason=mode_reason(prob.module, spec.mode, prob.mode_fixed_at_export),
            precision=precision,
            **point,
        )
        pair = (
            None if overlap is None else EigenvectorOverlap(start=index - 1, end=index, **overlap)
        )
        # a partial result, fenced by the run's epoch and retried while Redis is away
        run.write(partial(_add_point, store, t.id, found, pair, run.epoch))
        hooks.done(point["lambda_max"])
        del prob, res
        gc.collect()


def _add_point(
    store: TrajectoryStore,
    tid: str,
    point: TrajectoryPoint,
    overlap: EigenvectorOverlap | None,
    epoch: int,
    _: object,
) -> bool:
    return bool(store.add_point(tid, point, overlap, epoch))


def execute(trajectory_id: str, rt: WorkerRuntime) -> str:
    """Run trajectory `trajectory_id` once; returns what happened. Raises only Reject."""
    return runs.execute(rt, TrajectoryStore(rt.store.r), trajectory_id, measure_trajectory, KEPT)

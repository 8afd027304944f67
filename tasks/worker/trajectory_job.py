"""The Celery task that runs one trajectory: each checkpoint's top-k eigenpairs, in order.

The job task's machinery, reused as is: the same exactly-once guard (missing or terminal
records are acknowledged without running), the same per-id run lock kept alive by the
heartbeat (which also enforces the hard time limit on this record), the soft time limit and
the cancel flag checked between Lanczos iterations through the job's `Hooks`, and draining
hands the trajectory back to the queue. What differs is the loop: one checkpoint at a time is
loaded, measured and dropped; only its eigenvectors (dim×k float64) stay in this process, in
the engine's TrajectoryTracker, until the next checkpoint's overlap is computed. They never
go to Redis. Each checkpoint's point is appended to the record as soon as it is known, so a
cancelled or failed trajectory keeps what it measured.

The optimizer sets the edge (tasks.engine.stability): for Adam each checkpoint's optimizer state
(`exp_avg_sq.<name>`, `step`; an uploaded safetensors blob) gives the preconditioner P, and the
eigenpairs are those of P⁻¹H, with λmax of H measured beside them. Each point says which mode
the model was measured in and why (`mode_reason`).

Every error names the checkpoint at fault (`checkpoints[2].model: ...`) in an RFC 9457
problem.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import warnings
from typing import Any

from celery import shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded

from tasks.celery_app import RUN_TRAJECTORY_TASK
from tasks.spec import (
    EigenvectorOverlap,
    JobStatus,
    Problem,
    Trajectory,
    TrajectoryPoint,
)
from tasks.trajectorystore import TrajectoryStore
from tasks.worker.job import (
    Draining,
    Hooks,
    LockLost,
    TimeLimit,
    _acquire,
    _dataset_path,
    evaluate,
    problem,
    resolve_device,
    task_outcome,
)
from tasks.worker.loaders import LoadError
from tasks.worker.runtime import ActiveJob, WorkerRuntime, current, versions

log = logging.getLogger(__name__)


def _at(where: str, e: LoadError) -> LoadError:
    """The same problem, its detail prefixed with the field at fault."""
    return LoadError(e.title, f"{where}: {e.detail}", e.status, e.kind)


class _Data:
    """The trajectory's dataset, read once per model dtype (checkpoints usually share one)."""

    def __init__(self, rt: WorkerRuntime, t: Trajectory) -> None:
        self.rt, self.t = rt, t
        self._path: Any = None
        self._by_dtype: dict[Any, list] = {}
        self.name = "the dataset"

    def batches(self, dtype: Any) -> list:
        from tasks.worker.datasets import load_dataset

        if dtype not in self._by_dtype:
            spec = self.t.spec
            try:
                if self._path is None:
                    self._path = _dataset_path(self.rt, self.t)  # type: ignore[arg-type]
                    self.name = (self._path[1] or {}).get("filename") or self._path[0].name
                self._by_dtype[dtype] = load_dataset(
                    self._path[0],
                    self._path[1],
                    inputs_key=spec.dataset.inputs_key,
                    targets_key=spec.dataset.targets_key,
                    max_samples=spec.dataset.max_samples,
                    batch_size=spec.dataset.batch_size,
                    loss=spec.loss,
                    dtype=dtype,
                )
            except LoadError as e:
                raise _at("dataset", e) from e
        return self._by_dtype[dtype]


def _build(rt: WorkerRuntime, t: Trajectory, data: _Data, index: int, device: str):
    """Load checkpoint `index` and make its HessianProblem; errors name the checkpoint."""
    from tasks.engine.problem import HessianProblem
    from tasks.worker.datasets import probe
    from tasks.worker.loaders import load_model

    where = f"checkpoints[{index}].model"
    model_id = t.spec.checkpoints[index].model
    meta = rt.blobs.meta("models", model_id)
    if meta is None:
        raise LoadError("Model not found", f"{where}: model {model_id} is not in the blob store")
    try:
        model = load_model(rt.blobs.path("models", model_id), meta)
        batches = data.batches(model.dtype)
        spec = t.spec
        probe(model, batches, data.name, spec.loss, spec.output_key, spec.class_dim)
    except LoadError as e:
        raise e if e.detail.startswith("dataset:") else _at(where, e) from e
    return HessianProblem(
        model.module,
        batches,
        loss=t.spec.loss,
        mode=t.spec.mode,
        device=device,
        output_key=t.spec.output_key,
        class_dim=t.spec.class_dim,
    )


def _preconditioner(rt: WorkerRuntime, t: Trajectory, index: int, prob: Any) -> Any:
    """Adam's diag(P) at checkpoint `index` from its uploaded state; errors name the field."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from tasks.engine.preconditioner import (
        OptimizerStateError,
        adam_preconditioner,
        state_from_tensors,
    )

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
    from torch import nn

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


def execute(trajectory_id: str, rt: WorkerRuntime) -> str:
    """Run trajectory `trajectory_id` once; returns what happened. Raises only Reject."""
    store = TrajectoryStore(rt.store.r)
    view = dataclasses.replace(rt, store=store)  # Hooks and the lock helper read this store
    t = store.get(trajectory_id)
    if t is None or t.status.terminal:
        state = "missing" if t is None else t.status
        log.info("trajectory %s: %s, not running it", trajectory_id, state)
        return "skipped"
    if not _acquire(view, trajectory_id):
        log.warning("trajectory %s: another live worker holds its lock", trajectory_id)
        return "locked"
    rt.active = view.active = ActiveJob(trajectory_id, store=store)
    try:
        return _run_locked(trajectory_id, view, rt.active)
    finally:
        rt.active = view.active = None
        store.release(trajectory_id, rt.hostname)


def _run_locked(tid: str, rt: WorkerRuntime, active: ActiveJob) -> str:
    store: TrajectoryStore = rt.store  # type: ignore[assignment]
    t = store.get(tid)
    if t is None or t.status.terminal:
        return "skipped"
    if store.cancel_requested(tid):
        store.finish(tid, JobStatus.cancelled)
        return "cancelled"
    index = -1
    hooks: Hooks | None = None
    attempt: int | None = None
    try:
        from tasks.engine.context import Cancelled, MeasureContext
        from tasks.engine.trajectory import (
            ShapeMismatch,
            TrajectoryTracker,
            named_shapes,
            top_eigenpairs,
        )

        device, description = resolve_device(t.spec.device)
        attempt = active.attempt = store.mark_running(tid, rt.hostname, description, versions())
        store.reset_results(tid)
        deadline = active.started + rt.settings.soft_time_limit_s
        tracker = TrajectoryTracker(k=t.spec.k)
        data = _Data(rt, t)
        for index, cp in enumerate(t.spec.checkpoints):
            hooks = Hooks(rt, tid, str(index), deadline)
            hooks.flush()
            prob = _build(rt, t, data, index, device)
            shapes = named_shapes(prob.names, prob.shapes)
            try:
                tracker.check(shapes)
            except ShapeMismatch as e:
                raise LoadError(
                    "Checkpoints do not match",
                    f"checkpoints[{index}].model: {e}; every checkpoint of a trajectory must "
                    "have the parameter names and shapes of checkpoints[0], so that their "
                    "eigenvectors can be compared",
                    kind="checkpoint-mismatch",
                ) from e
            ev = evaluate(prob, data.name)
            ctx = MeasureContext(prob, hooks.on_progress, hooks.should_cancel)
            opt = t.spec.optimizer
            pre = _preconditioner(rt, t, index, prob) if opt.name == "adam" else None
            lam_h, extra_hvps = None, 0
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    pairs = top_eigenpairs(
                        prob, t.spec.k, t.spec.tol, t.spec.max_iter, ctx=ctx, preconditioner=pre
                    )
                    if pre is not None:  # λmax of H itself, beside P⁻¹H's
                        raw = top_eigenpairs(prob, 1, t.spec.tol, t.spec.max_iter, ctx=ctx)
                        lam_h, extra_hvps = raw.eigenvalues[0], raw.hvps
                except Cancelled:
                    hooks.flush("failed")
                    store.finish(tid, JobStatus.cancelled, attempt=attempt)
                    return "cancelled"
            point, overlap = tracker.add(
                shapes, pairs, cp.learning_rate, opt.model_dump(), hessian_lambda_max=lam_h
            )
            point["hvps"] += extra_hvps
            notes = [f"{w.category.__name__}: {w.message}" for w in caught]
            if prob.mode_fixed_at_export and t.spec.mode != "eval":
                notes.append(
                    "a torch.export model keeps the train/eval behaviour it was exported with; "
                    f"mode={t.spec.mode!r} could not be applied"
                )
            elif t.spec.mode == "train":
                notes.append(
                    "measured in train mode: BatchNorm batch statistics and dropout make the "
                    "result depend on batching"
                )
            store.add_point(
                tid,
                TrajectoryPoint(
                    index=index,
                    model=cp.model,
                    step=cp.step,
                    learning_rate=cp.learning_rate,
                    dim=prob.dim,
                    loss=ev.get("loss"),
                    accuracy=ev.get("accuracy"),
                    warnings=notes,
                    mode=t.spec.mode,
                    mode_reason=mode_reason(prob.module, t.spec.mode, prob.mode_fixed_at_export),
                    **point,
                ),
                None
                if overlap is None
                else EigenvectorOverlap(start=index - 1, end=index, **overlap),
            )
            hooks.done(point["lambda_max"])
            del prob, pairs
            gc.collect()
        store.finish(tid, JobStatus.succeeded, attempt=attempt)
        return "succeeded"
    except Draining:
        store.end_run(tid, "handed-back", attempt=attempt)
        raise Reject("worker shutting down", requeue=True) from None
    except LockLost:
        log.warning("trajectory %s: attempt %s was taken over; stopping it", tid, attempt)
        return "lost"
    except LoadError as e:
        err = Problem(type=e.type, title=e.title, status=e.status, detail=e.detail)
    except (TimeLimit, SoftTimeLimitExceeded):
        err = problem(
            "Time limit exceeded",
            f"the trajectory ran past the soft time limit of {rt.settings.soft_time_limit_s} s "
            f"(SHARPNESS_SOFT_TIME_LIMIT_S) at checkpoints[{index}]; the points of the "
            "checkpoints before it are kept",
            kind="time-limit",
        )
    except MemoryError as e:
        err = problem("Out of memory", f"checkpoints[{index}]: {e}", kind="out-of-memory")
    except Exception as e:  # never crash the worker on a trajectory's error
        log.exception("trajectory %s failed", tid)
        where = f"checkpoints[{index}]" if index >= 0 else "preparing the trajectory"
        kind = "out-of-memory" if "out of memory" in str(e).lower() else "job-failed"
        err = problem("Trajectory failed", f"{where}: {type(e).__name__}: {e}", kind=kind)
    if hooks is not None:
        hooks.flush("failed")
    store.finish(tid, JobStatus.failed, error=err, attempt=attempt)
    return "failed"


@shared_task(name=RUN_TRAJECTORY_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_trajectory(self: Any, trajectory_id: str, *args: Any, **kwargs: Any) -> str:
    """Celery entry point; the gateway enqueues it by name with the trajectory id."""
    rt = current(getattr(self.request, "hostname", None))
    outcome = execute(trajectory_id, rt)
    return task_outcome(self, outcome, TrajectoryStore(rt.store.r), trajectory_id)

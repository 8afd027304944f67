"""The Celery task that runs one job: guard, lock, load, measure, record.

Exactly-once in effect, on a broker that delivers at least once:
- a message whose job is missing or already terminal is acknowledged without running
  (Redis redelivers unacknowledged messages after the visibility timeout);
- a per-job lock with a short TTL, refreshed by the heartbeat thread, keeps two live workers
  from running one job; a killed worker's lock expires, so the redelivered message runs;
- JobStore.finish never leaves a terminal state, so a late writer cannot overwrite a result.

Nothing a job does may crash the worker: every error becomes a failed job whose `error` is an
RFC 9457 problem naming the file, field or measure at fault.

Held-out data (`eval_dataset`) is loaded and checked like the training data and only evaluated
(loss, accuracy, the generalization gap); it never enters a measure. The initial model
(`initial_model`, w₀) is loaded like the model and handed to the measures by parameter name.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded

from tasks import problem_types
from tasks.celery_app import RUN_JOB_TASK
from tasks.spec import DatasetRef, Job, JobStatus, MeasureProgress, Problem
from tasks.worker.loaders import LoadError, first_line
from tasks.worker.runtime import ActiveJob, WorkerRuntime, current, lock_ttl, versions

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.25
CANCEL_CHECK_EVERY_S = 0.5


class TimeLimit(Exception):
    """The job ran past the soft time limit."""


class Draining(Exception):
    """The worker is shutting down: hand the job back to the queue."""


class RunFailed(Exception):
    """Raised to Celery after a run was recorded failed, so its task state is FAILURE and the
    alerts of Flower and celery-exporter see it; the record holds the full problem."""


def task_outcome(task: Any, outcome: str, store: Any, record_id: str) -> str:
    """The Celery task state that says what the run did: a failed run raises (FAILURE), a
    cancelled one is REVOKED; anything else returns `outcome` (SUCCESS)."""
    if outcome == "failed":
        record = store.get(record_id)
        error = record.error if record is not None else None
        detail = f"{error.title}: {error.detail}" if error is not None else "failed"
        raise RunFailed(f"{store.KIND} {record_id} failed: {detail}")
    if outcome == "cancelled":
        from celery.exceptions import Ignore

        task.backend.mark_as_revoked(task.request.id, reason="cancelled", request=task.request)
        raise Ignore()
    return outcome


class LockLost(Exception):
    """Another worker took the run over (this one was paused past its lock): stop, write
    nothing."""


def problem(title: str, detail: str, status: int = 500, kind: str = "job-failed") -> Problem:
    return Problem(type=problem_types.uri(kind), title=title, status=status, detail=detail)


# ------------------------------------------------------------------------------- devices
def resolve_device(requested: str) -> tuple[str, str]:
    """(torch device, description) for the job's device field."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise LoadError(
            "CUDA not available",
            "the job asks for device 'cuda' but this worker sees no CUDA device",
            status=503,
            kind="device-unavailable",
        )
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        index = torch.cuda.current_device()
        return f"cuda:{index}", f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return "cpu", "cpu"


# ------------------------------------------------------------------------------- hooks
class Hooks:
    """Throttled progress writes and cancel checks for one measure of one job."""

    def __init__(self, rt: WorkerRuntime, job_id: str, measure: str, deadline: float) -> None:
        self.rt, self.job_id, self.measure, self.deadline = rt, job_id, measure, deadline
        self._last_write = 0.0
        self._last_check = 0.0
        self._pending: dict[str, Any] | None = None

    def on_progress(self, info: dict[str, Any]) -> None:
        self._pending = info
        now = time.monotonic()
        if now - self._last_write >= PROGRESS_EVERY_S:
            self.flush()

    def flush(self, state: str = "running") -> None:
        info = self._pending or {}
        self.rt.store.set_progress(
            self.job_id,
            self.measure,
            MeasureProgress(
                state=state,
                iteration=int(info.get("iteration", 0) or 0),
                estimate=info.get("estimate"),
                updated_at=datetime.now(UTC),
            ),
        )
        self._last_write = time.monotonic()

    def done(self, value: Any) -> None:
        """Final progress entry: the last iteration count with the measure's value."""
        self._pending = {**(self._pending or {}), "estimate": value}
        self.flush("done")

    def should_cancel(self) -> bool:
        now = time.monotonic()
        if self.rt.draining.is_set():
            raise Draining()
        if self.rt.active is not None and self.rt.active.lost:
            raise LockLost()
        if now > self.deadline:
            raise TimeLimit()
        if now - self._last_check < CANCEL_CHECK_EVERY_S:
            return False
        self._last_check = now
        return self.rt.store.cancel_requested(self.job_id)


# ------------------------------------------------------------------------------- loading
def _dataset_path(
    rt: WorkerRuntime, job: Job, ref: DatasetRef | None = None, field: str = "dataset"
) -> tuple[Path, dict[str, Any] | None]:
    """Where the dataset `ref` (default: the job's training data) lies; `field` names it."""
    ref = ref if ref is not None else job.spec.dataset
    if ref.id is not None:
        meta = rt.blobs.meta("datasets", ref.id)
        if meta is None:
            raise LoadError("Dataset not found", f"dataset {ref.id} is not in the blob store")
        return rt.blobs.path("datasets", ref.id), meta
    try:
        from tasks.uris import open_uri
    except ImportError as e:
        raise LoadError("URI datasets unsupported", "this worker cannot open URIs", 500) from e
    try:
        return Path(open_uri(ref.uri, rt.settings)), None
    except LoadError:
        raise
    except Exception as e:
        raise LoadError("Dataset URI refused", f"{field}.uri {ref.uri!r}: {e}") from e


def _at(where: str, e: LoadError) -> LoadError:
    """The same problem, its detail prefixed with the field at fault."""
    return LoadError(e.title, f"{where}: {e.detail}", e.status, e.kind)


def load_job_model(rt: WorkerRuntime, job: Job):
    """The job's model (a tasks.worker.loaders.LoadedModel), loaded safely."""
    from tasks.worker.loaders import load_model

    meta = rt.blobs.meta("models", job.spec.model)
    if meta is None:
        raise LoadError("Model not found", f"model {job.spec.model} is not in the blob store")
    return load_model(rt.blobs.path("models", job.spec.model), meta)


def _load_batches(rt: WorkerRuntime, job: Job, model: Any, ref: DatasetRef, field: str):
    """Read dataset `ref` in the model's dtype and check one forward pass fits the model."""
    from tasks.worker.datasets import load_dataset, probe

    data_path, data_meta = _dataset_path(rt, job, ref, field)
    batches = load_dataset(
        data_path,
        data_meta,
        inputs_key=ref.inputs_key,
        targets_key=ref.targets_key,
        max_samples=ref.max_samples,
        batch_size=ref.batch_size,
        loss=job.spec.loss,
        dtype=model.dtype,
    )
    name = (data_meta or {}).get("filename") or data_path.name
    spec = job.spec
    probe(model, batches, name, spec.loss, spec.output_key, spec.class_dim)
    return batches


def make_problem(job: Job, module: Any, batches: list, device: str):
    """The HessianProblem of the job's loss, mode and output layout over `batches`."""
    from tasks.engine.problem import HessianProblem

    spec = job.spec
    return HessianProblem(
        module,
        batches,
        loss=spec.loss,
        mode=spec.mode,
        device=device,
        output_key=spec.output_key,
        class_dim=spec.class_dim,
    )


def build_problem(rt: WorkerRuntime, job: Job, device: str, model: Any = None):
    """Load model (unless given) and data, check they fit, and make the HessianProblem."""
    model = model if model is not None else load_job_model(rt, job)
    batches = _load_batches(rt, job, model, job.spec.dataset, "dataset")
    return make_problem(job, model.module, batches, device)


def held_out_evaluation(rt: WorkerRuntime, job: Job, model: Any, device: str) -> dict | None:
    """Loss and accuracy on `eval_dataset` at the same weights (None without one). Its
    problem is dropped at once: held-out data is evaluated, never measured."""

    spec = job.spec
    if spec.eval_dataset is None:
        return None
    try:
        batches = _load_batches(rt, job, model, spec.eval_dataset, "eval_dataset")
    except LoadError as e:
        raise e if e.detail.startswith("eval_dataset") else _at("eval_dataset", e) from e
    held_out = make_problem(job, model.module, batches, device)
    ev = evaluate(held_out, "eval_dataset")
    return {"loss": ev["loss"], "accuracy": ev["accuracy"], "num_examples": ev["num_examples"]}


def with_gap(train: dict[str, Any], test: dict[str, Any] | None) -> dict[str, Any]:
    """`evaluation` with 'test' and 'gap' (accuracy: train − test; loss: test − train), the
    accuracy gap only where there is an accuracy (cross_entropy)."""
    if test is None:
        return train
    gap: dict[str, float] = {}
    if train.get("accuracy") is not None and test.get("accuracy") is not None:
        gap["accuracy"] = train["accuracy"] - test["accuracy"]
    gap["loss"] = test["loss"] - train["loss"]
    return {**train, "test": test, "gap": gap}


def load_initial_params(rt: WorkerRuntime, job: Job, module: Any) -> dict[str, Any] | None:
    """w₀ from `initial_model` by parameter name, checked against the model (None without)."""
    from tasks.engine.initial import InitialParamsMismatch, check_initial_params
    from tasks.worker.loaders import load_model

    model_id = job.spec.initial_model
    if model_id is None:
        return None
    meta = rt.blobs.meta("models", model_id)
    if meta is None:
        raise LoadError(
            "Initial model not found", f"initial_model: model {model_id} is not in the blob store"
        )
    try:
        loaded = load_model(rt.blobs.path("models", model_id), meta)
    except LoadError as e:
        raise _at("initial_model", e) from e
    initial = {n: p.detach() for n, p in loaded.module.named_parameters()}
    try:
        check_initial_params(module, initial)
    except InitialParamsMismatch as e:
        raise LoadError(
            "Initial model does not fit the model",
            f"initial_model: {e}; upload a checkpoint of the same architecture, saved the "
            "same way as the model",
        ) from e
    return initial


def load_optimizer_state(rt: WorkerRuntime, job: Job) -> dict[str, Any] | None:
    """Adam's state tensors from `optimizer_state` (None without), for
    preconditioned_lambda_max; their fit to the model is checked by the measure."""
    state_id = job.spec.optimizer_state
    if state_id is None:
        return None
    if rt.blobs.meta("optimizer_states", state_id) is None:
        raise LoadError(
            "Optimizer state not found", f"optimizer_state: {state_id} is not in the blob store"
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(rt.blobs.path("optimizer_states", state_id)))
    except (SafetensorError, OSError) as e:
        raise LoadError("Unreadable optimizer state", f"optimizer_state: {e}") from e


def evaluate(problem_: Any, name: str) -> dict[str, Any]:
    try:
        ev = problem_.evaluate()
    except Exception as e:
        msg = first_line(e)
        raise LoadError(
            "Data does not fit the model",
            f"{name}: computing the loss failed ({msg}); check the targets' shape and range "
            "against the model's outputs",
        ) from e
    ev["mode"] = problem_.mode
    if problem_.mode_note:
        ev["mode_note"] = problem_.mode_note
    ev["num_examples"] = problem_.num_examples
    ev["num_targets"] = problem_.num_targets
    return ev


# ------------------------------------------------------------------------------- the run
def _acquire(rt: WorkerRuntime, job_id: str) -> bool:
    """Take the job's lock, waiting up to one TTL for a holder that may have just died."""
    ttl = lock_ttl(rt.settings)
    deadline = time.monotonic() + ttl + 1
    while True:
        if rt.store.acquire(job_id, rt.hostname, ttl):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def execute(job_id: str, rt: WorkerRuntime) -> str:
    """Run job `job_id` once; returns what happened. Raises only Reject (worker draining)."""
    job = rt.store.get(job_id)
    if job is None or job.status.terminal:
        log.info("job %s: %s, not running it", job_id, "missing" if job is None else job.status)
        return "skipped"
    if not _acquire(rt, job_id):
        log.warning("job %s: another live worker holds its lock", job_id)
        return "locked"
    rt.active = ActiveJob(job_id)
    try:
        return _run_locked(job_id, rt)
    finally:
        rt.active = None
        rt.store.release(job_id, rt.hostname)


def _run_locked(job_id: str, rt: WorkerRuntime) -> str:
    job = rt.store.get(job_id)  # re-read under the lock: another worker may have finished it
    if job is None or job.status.terminal:
        return "skipped"
    if rt.store.cancel_requested(job_id):
        rt.store.finish(job_id, JobStatus.cancelled)
        return "cancelled"
    results: dict[str, Any] = {}
    evaluation: dict[str, Any] | None = None
    current_measure = ""
    hooks: Hooks | None = None
    attempt: int | None = None
    try:
        device, description = resolve_device(job.spec.device)
        attempt = rt.store.mark_running(job_id, rt.hostname, description, versions())
        rt.active.attempt = attempt  # type: ignore[union-attr]
        model = load_job_model(rt, job)
        prob = build_problem(rt, job, device, model)
        evaluation = evaluate(prob, "the dataset")
        evaluation = with_gap(evaluation, held_out_evaluation(rt, job, model, device))
        initial = load_initial_params(rt, job, prob.module)
        optimizer_state = load_optimizer_state(rt, job)
        deadline = rt.active.started + rt.settings.soft_time_limit_s  # type: ignore[union-attr]
        from tasks.engine.context import Cancelled
        from tasks.engine.runner import run_measure

        for m in job.spec.measures:
            current_measure = m.name
            hooks = Hooks(rt, job_id, m.name, deadline)
            hooks.flush()
            try:
                res = run_measure(
                    prob,
                    m.name,
                    m.params,
                    hooks.on_progress,
                    hooks.should_cancel,
                    initial_params=initial,
                    optimizer_state=optimizer_state,
                )
            except Cancelled:
                hooks.flush("failed")
                rt.store.finish(
                    job_id, JobStatus.cancelled, results, evaluation=evaluation, attempt=attempt
                )
                return "cancelled"
            results[m.name] = res
            hooks.done(res.get("value"))
        rt.store.finish(
            job_id, JobStatus.succeeded, results, evaluation=evaluation, attempt=attempt
        )
        return "succeeded"
    except Draining:
        # hand the job back: another worker (or this one after a restart) runs it again
        rt.store.end_run(job_id, "handed-back", attempt=attempt)
        raise Reject("worker shutting down", requeue=True) from None
    except LockLost:
        log.warning("job %s: attempt %s was taken over; stopping it", job_id, attempt)
        return "lost"
    except LoadError as e:
        err = Problem(type=e.type, title=e.title, status=e.status, detail=e.detail)
    except (TimeLimit, SoftTimeLimitExceeded):
        err = problem(
            "Time limit exceeded",
            f"the job ran past the soft time limit of {rt.settings.soft_time_limit_s} s "
            f"(SHARPNESS_SOFT_TIME_LIMIT_S) during measure {current_measure!r}; results of "
            "finished measures are kept",
            status=500,
            kind="time-limit",
        )
    except NotImplementedError as e:
        err = problem(
            "Measure not implemented",
            f"measure {current_measure!r} is not implemented by this worker ({e})",
            status=501,
            kind="not-implemented",
        )
    except MemoryError as e:
        err = problem("Out of memory", f"measure {current_measure!r}: {e}", kind="out-of-memory")
    except Exception as e:  # never crash the worker on a job's error
        log.exception("job %s failed", job_id)
        where = f"measure {current_measure!r}" if current_measure else "preparing the job"
        kind = "out-of-memory" if "out of memory" in str(e).lower() else "job-failed"
        err = problem("Job failed", f"{where}: {type(e).__name__}: {e}", kind=kind)
    if hooks is not None and current_measure not in results:
        hooks.flush("failed")
    rt.store.finish(
        job_id, JobStatus.failed, results, error=err, evaluation=evaluation, attempt=attempt
    )
    return "failed"


@shared_task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job(self: Any, job_id: str, *args: Any, **kwargs: Any) -> str:
    """Celery entry point; the gateway enqueues it by name with the job id. Its Celery state
    is FAILURE for a failed job and REVOKED for a cancelled one (see `task_outcome`)."""
    rt = current(getattr(self.request, "hostname", None))
    return task_outcome(self, execute(job_id, rt), rt.store, job_id)

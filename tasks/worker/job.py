"""What a job does: load, measure, record, inside the one run wrapper (its Celery task is
tasks.jobs).

The guard, lock, attempts, progress throttling, cancellation, limits, problems and the one
`finish` are tasks.worker.run's, shared with trajectories; this module says what a job does:
load the model and data (checked against each other), evaluate them, and run each measure
through the engine's runner (tasks.engine.runner) with its progress and cancel hooks.

Held-out data (`eval_dataset`) is loaded and checked like the training data and only evaluated
(loss, accuracy, the generalization gap); it never enters a measure. The initial model
(`initial_model`, w₀) is loaded like the model and handed to the measures by parameter name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tasks.contract.spec import DatasetRef, Job
from tasks.worker import run as runs
from tasks.worker.loaders import LoadError, first_line
from tasks.worker.run import Run, RunFailed, at, problem  # noqa: F401
from tasks.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

_at = at  # the name problems are built with here (tests import it from this module)
KEPT = "results of finished measures are kept"


# ------------------------------------------------------------------------------- loading
def dataset_path(
    rt: WorkerRuntime, ref: DatasetRef, field: str = "dataset"
) -> tuple[Path, dict[str, Any] | None]:
    """Where dataset `ref` lies, and its stored metadata (None for a URI); `field` names it."""
    if ref.id is not None:
        meta = rt.blobs.meta("datasets", ref.id)
        if meta is None:
            raise LoadError("Dataset not found", f"dataset {ref.id} is not in the blob store")
        return rt.blobs.path("datasets", ref.id), meta
    try:
        from tasks.artifacts.uris import open_uri
    except ImportError as e:
        raise LoadError("URI datasets unsupported", "this worker cannot open URIs", 500) from e
    try:
        return Path(open_uri(ref.uri, rt.settings)), None
    except LoadError:
        raise
    except Exception as e:
        raise LoadError("Dataset URI refused", f"{field}.uri {ref.uri!r}: {e}") from e


def load_job_model(rt: WorkerRuntime, job: Job):
    """The job's model (a tasks.worker.loaders.LoadedModel), loaded safely."""
    from tasks.worker.loaders import load_model

    meta = rt.blobs.meta("models", job.spec.model)
    if meta is None:
        raise LoadError("Model not found", f"model {job.spec.model} is not in the blob store")
    return load_model(rt.blobs.path("models", job.spec.model), meta)


def read_dataset(rt: WorkerRuntime, spec: Any, ref: DatasetRef, field: str, dtype: Any):
    """(batches, file name) of dataset `ref` in `dtype`, with the loss of `spec` (a job's or
    a trajectory's)."""
    from tasks.worker.datasets import load_dataset

    data_path, data_meta = dataset_path(rt, ref, field)
    batches = load_dataset(
        data_path,
        data_meta,
        inputs_key=ref.inputs_key,
        targets_key=ref.targets_key,
        max_samples=ref.max_samples,
        batch_size=ref.batch_size,
        loss=spec.loss,
        dtype=dtype,
    )
    return batches, (data_meta or {}).get("filename") or data_path.name


def check_fit(spec: Any, model: Any, batches: list, name: str) -> None:
    """One forward pass of the first batch: the data fits the model and its loss."""
    from tasks.worker.datasets import probe

    probe(model, batches, name, spec.loss, spec.output_key, spec.class_dim)


def _load_batches(rt: WorkerRuntime, job: Job, model: Any, ref: DatasetRef, field: str):
    """Read dataset `ref` in the model's dtype and check one forward pass fits the model."""
    batches, name = read_dataset(rt, job.spec, ref, field, model.dtype)
    check_fit(job.spec, model, batches, name)
    return batches


def make_problem(spec: Any, module: Any, batches: list, device: str):
    """The HessianProblem of the spec's (a job's or a trajectory's) loss, mode and output
    layout over `batches`."""
    from tasks.engine.problem import HessianProblem

    return HessianProblem(
        module,
        batches,
        loss=spec.loss,
        mode=spec.mode,
        device=device,
        output_key=spec.output_key,
        class_dim=spec.class_dim,
        dropout_seed=getattr(spec, "dropout_seed", 0),  # a trajectory's spec has none
    )


def build_problem(rt: WorkerRuntime, job: Job, device: str, model: Any):
    """Load the data, check it fits the model, and make the HessianProblem; with it, what the
    job must say about the data (an input the given names leave out), or None."""
    from tasks.worker.datasets import unused_inputs_note

    batches = _load_batches(rt, job, model, job.spec.dataset, "dataset")
    note = unused_inputs_note(model, batches)
    return make_problem(job.spec, model.module, batches, device), note


def held_out_evaluation(
    rt: WorkerRuntime, job: Job, model: Any, device: str, should_cancel: Any = None
) -> dict | None:
    """Loss and accuracy on `eval_dataset` at the same weights (None without one). Its
    problem is dropped at once: held-out data is evaluated, never measured."""

    spec = job.spec
    if spec.eval_dataset is None:
        return None
    try:
        batches = _load_batches(rt, job, model, spec.eval_dataset, "eval_dataset")
    except LoadError as e:
        raise e if e.detail.startswith("eval_dataset") else _at("eval_dataset", e) from e
    held_out = make_problem(job.spec, model.module, batches, device)
    ev = evaluate(held_out, "eval_dataset", should_cancel)
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


def evaluate(problem_: Any, name: str, should_cancel: Any = None) -> dict[str, Any]:
    """Loss and accuracy over `problem_`'s data; a cancel (`should_cancel`) is heard before
    every batch's forward pass, as in a measure."""
    from tasks.engine.cancel import Cancelled, cancellable

    try:
        with cancellable(should_cancel):
            ev = problem_.evaluate()
    except (Cancelled, runs.Draining, runs.LockLost, runs.TimeLimit):
        raise  # the run stops (a cancel, the worker draining, ...): not the data's fault
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
def measure_job(run: Run) -> None:
    """The job's work inside the run wrapper: load, evaluate, then each measure in order,
    its result recorded in `run.results` as it ends (a failure or cancel keeps them)."""
    from tasks.engine.runner import run_measure

    rt, job = run.rt, run.record
    if job.spec.data_parallel > 1:  # the same call, run by data_parallel processes
        from tasks.worker import parallel

        run_measure = parallel.runner(rt, job, run.device)
    run.results = results = {}
    model = load_job_model(rt, job)
    prob, data_note = build_problem(rt, job, run.device, model)
    cancel = runs.Hooks(run, "evaluation").should_cancel  # no progress entry of its own
    run.evaluation = evaluate(prob, "the dataset", cancel)
    if data_note:
        run.evaluation["data_note"] = data_note
    held_out = held_out_evaluation(rt, job, model, run.device, cancel)
    run.evaluation = with_gap(run.evaluation, held_out)
    initial = load_initial_params(rt, job, prob.module)
    optimizer_state = load_optimizer_state(rt, job)
    for m in job.spec.measures:
        hooks = run.step(m.name, f"measure {m.name!r}")
        res = run_measure(
            prob,
            m.name,
            m.params,
            hooks.on_progress,
            hooks.should_cancel,
            initial_params=initial,
            optimizer_state=optimizer_state,
        )
        results[m.name] = res
        hooks.done(res.get("value"))


def execute(job_id: str, rt: WorkerRuntime) -> str:
    """Run job `job_id` once; returns what happened. Raises only Reject (worker draining)."""
    return runs.execute(rt, rt.store, job_id, measure_job, KEPT)

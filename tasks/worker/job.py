"""What a job does: load, measure, record, inside the one run wrapper (its Celery task is
tasks.jobs).

The guard, lock, attempts, progress throttling, cancellation, limits, problems and the one
`finish` are tasks.worker.run's, shared with trajectories; this module says what a job does:
load the model and data (checked against each other: tasks.worker.loading), evaluate them
(tasks.worker.evaluation), and run each measure through the engine's runner
(tasks.engine.runner), or the data-parallel ranks (tasks.worker.parallel), with its progress
and cancel hooks.

Held-out data (`eval_dataset`) is loaded and checked like the training data and only evaluated
(loss, accuracy, the generalization gap); it never enters a measure. The initial model
(`initial_model`, w₀) is loaded like the model and handed to the measures by parameter name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from tasks.engine.runner import run_measure
from tasks.worker import parallel
from tasks.worker import run as runs
from tasks.worker.evaluation import evaluate, held_out_evaluation, with_gap
from tasks.worker.loading import (
    build_problem,
    load_initial_params,
    load_job_model,
    load_optimizer_state,
)
from tasks.worker.run import Run
from tasks.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

KEPT = "results of finished measures are kept"


def measure_job(run: Run) -> None:
    """The job's work inside the run wrapper: load, evaluate, then each measure in order,
    its result recorded in `run.results` as it ends (a failure or cancel keeps them)."""
    rt, job = run.rt, run.record
    measure: Callable[..., dict[str, Any]] = run_measure
    if job.spec.data_parallel > 1:  # the same call, run by data_parallel processes
        measure = parallel.runner(rt, job, run.device)
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
        res = measure(
            prob,
            m.name,
            m.params,
            hooks.on_progress,
            hooks.should_cancel,
            initial_params=initial,
            optimizer_state=optimizer_state,
        )
        results[m.name] = with_precision(res, model.precision)
        hooks.done(res.get("value"))


def with_precision(result: dict[str, Any], precision: dict[str, str] | None) -> dict[str, Any]:
    """`result` (and each of its per-layer results) saying in `diagnostics.precision` the
    dtype the job asked for, the model's own and the one its products were computed in."""
    if precision is None:
        return result
    result.setdefault("diagnostics", {})["precision"] = dict(precision)
    for sub in (result.get("per_layer") or {}).values():
        if isinstance(sub, dict):
            sub.setdefault("diagnostics", {})["precision"] = dict(precision)
    return result


def execute(job_id: str, rt: WorkerRuntime) -> str:
    """Run job `job_id` once; returns what happened. Raises only Reject (worker draining)."""
    return runs.execute(rt, rt.store, job_id, measure_job, KEPT)

"""Run one registered measure on a problem: validate, restrict, time, per-layer breakdown.

The worker and notebooks both call `run_measure`; it returns a dict shaped like
tasks.contract.spec.MeasureResult (value, converged, hvps, seconds, diagnostics, warnings,
per_layer),
JSON-serialisable. Warnings raised while measuring are both recorded in 'warnings' and
re-emitted, so a notebook user sees them and a job record keeps them.

`initial_params` (w₀ by parameter name) reach the measures through their context; they are
checked against the model once, here, so a mismatch fails before any work is done.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from torch import Tensor

from tasks.engine import registry
from tasks.engine.context import MeasureContext, RunOptions, cancellable
from tasks.engine.initial import check_initial_params
from tasks.engine.problem import HessianProblem, parameter_blocks


def _run_one(
    problem: HessianProblem,
    name: str,
    params: BaseModel,
    options: RunOptions,
    label: str = "",
) -> dict[str, Any]:
    result = _run(
        problem,
        lambda ctx: registry.get(name).runner()(ctx, params),
        options,
        label,
        stacklevel=4,  # re-emitted warnings point at run_measure's caller
    )
    if hasattr(params, "curvature"):
        result["diagnostics"]["curvature"] = params.curvature
    return result


def run_with_context(
    problem: HessianProblem,
    measure: Callable[[MeasureContext], dict[str, Any]],
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    hvp_backend: str = "auto",
    *,
    label: str = "",
    initial_params: dict[str, Tensor] | None = None,
    optimizer_state: dict[str, Tensor] | None = None,
    stacklevel: int = 2,
) -> dict[str, Any]:
    """Run `measure(ctx)` as every registered measure is run: timed, its warnings recorded
    and re-emitted, the mode, mode note, dimension and objective in its diagnostics, and the
    train-mode and export-mode notes in its warnings. A trajectory's per-checkpoint eigenpairs
    go through here, so they read the same as a job's measures. `measure` returns a dict
    (value, converged, hvps, diagnostics, …; other keys are passed through)."""
    options = RunOptions(on_progress, should_cancel, hvp_backend, initial_params, optimizer_state)
    return _run(problem, measure, options, label, stacklevel + 1)


def _run(
    problem: HessianProblem,
    measure: Callable[[MeasureContext], dict[str, Any]],
    options: RunOptions,
    label: str,
    stacklevel: int,
) -> dict[str, Any]:
    """`measure` in its context, timed, with its warnings caught; then annotated."""
    ctx = MeasureContext.for_run(problem, options, label)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # between batches too, in one process; sharded ranks agree at ctx.step only
        between_batches = options.should_cancel if problem.world_size == 1 else None
        try:
            with cancellable(between_batches):
                result = measure(ctx)
        finally:
            if problem.mode == "train":
                problem.restore_buffers()
    result["seconds"] = time.perf_counter() - start
    _describe_problem(result, problem)
    msgs = result.setdefault("warnings", [])
    for w in caught:
        msgs.append(f"{w.category.__name__}: {w.message}")
        warnings.warn(w.message, w.category, stacklevel=stacklevel)
    result.setdefault("per_layer", None)
    return result


def _describe_problem(result: dict[str, Any], problem: HessianProblem) -> None:
    """What every result says of the problem it was measured on: the mode (and dropout seed,
    mode note), dimension, world size and objective in its diagnostics, the train-mode and
    export-mode notes in its warnings."""
    diagnostics = result.setdefault("diagnostics", {})
    diagnostics["mode"] = problem.mode
    if getattr(problem, "dropout_active", False):  # train mode: the masks' seed
        diagnostics["dropout_seed"] = problem.dropout_seed
    if problem.mode_note:
        diagnostics["mode_note"] = problem.mode_note
    diagnostics["dim"] = problem.dim
    diagnostics["world_size"] = problem.world_size
    diagnostics["objective"] = problem.describe()
    msgs = result.setdefault("warnings", [])
    if problem.mode == "train":
        msgs.append(
            "measured in train mode: BatchNorm batch statistics and dropout make the result "
            "depend on batching"
        )
    if problem.mode_fixed_at_export:  # the requested mode differs from what was measured
        msgs.append(f"{problem.mode_note}; export the model in the mode you want measured")


def run_measure(
    problem: HessianProblem,
    name: str,
    params: dict[str, Any] | BaseModel | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    hvp_backend: str = "auto",
    *,
    initial_params: dict[str, Tensor] | None = None,
    optimizer_state: dict[str, Tensor] | None = None,
) -> dict[str, Any]:
    """Validate `params` for measure `name`, run it, and add the per-layer breakdown.

    `initial_params`: the weights at initialisation w₀ by parameter name (for example
    `init_model.state_dict()`), used by weight_norms and pacbayes_bound; a ValueError names
    the parameter when they do not fit the model. `optimizer_state`: Adam's state for
    preconditioned_lambda_max (`exp_avg_sq.<name>` tensors and `step`)."""
    raw = params.model_dump() if isinstance(params, BaseModel) else params
    p = registry.validate_params(name, raw)
    if initial_params is not None:
        check_initial_params(problem.module, initial_params)
    if p.parameters:
        problem = problem.restrict(p.parameters)
    options = RunOptions(on_progress, should_cancel, hvp_backend, initial_params, optimizer_state)
    result = _run_one(problem, name, p, options)
    if p.per_layer:
        per_layer: dict[str, Any] = {}
        for block, names in parameter_blocks(problem.module, problem.parameter_patterns).items():
            per_layer[block] = _run_one(problem.restrict(names), name, p, options, block)
            per_layer[block].pop("per_layer", None)
        result["per_layer"] = per_layer
    return result

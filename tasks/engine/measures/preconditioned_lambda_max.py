"""preconditioned_lambda_max computed by Lanczos on P^{−1/2} H P^{−1/2}, P Adam's preconditioner
from the context's optimizer state (tasks.engine.preconditioner). Declared in
tasks.contract.measures.preconditioned_lambda_max."""

from __future__ import annotations

from typing import Any

from tasks.contract.measures.preconditioned_lambda_max import Params
from tasks.engine.context import MeasureContext
from tasks.engine.lanczos import lanczos
from tasks.engine.measures.base import attributes, measured
from tasks.engine.preconditioner import (
    PreconditionedOperator,
    adam_preconditioner,
    state_from_tensors,
)
from tasks.engine.stability import edge, stability_ratio


def run(ctx: MeasureContext, params: Params) -> dict:
    if ctx.optimizer_state is None:
        raise ValueError(
            "preconditioned_lambda_max needs Adam's optimizer state (exp_avg_sq by parameter "
            "name and step): submit a trajectory with optimizer 'adam' and an optimizer_state "
            "per checkpoint, or pass optimizer_state= to run_measure"
        )
    v, step = state_from_tensors(ctx.optimizer_state)
    p = adam_preconditioner(ctx.problem, v, step, params.beta1, params.beta2, params.eps)
    op = PreconditionedOperator(ctx.operator(params), p)
    res = lanczos(op, k=1, tol=params.tol, max_iter=params.max_iter, seed=params.seed, ctx=ctx)
    value = res.eigenvalues[0]
    diag: dict[str, Any] = {
        "residual_bound": res.residual_bounds[0],
        "error_estimate": res.error_estimates[0],
        **attributes(res, "limited_by", "tol", "rounding_level", "bytes_per_parameter"),
        "iterations": res.iterations,
        "step": step,
        "preconditioner_min": float(p.min()),
        "preconditioner_max": float(p.max()),
        "backend": op.backend,
    }
    if params.learning_rate is not None:
        e = edge("adam", params.learning_rate, beta1=params.beta1)
        diag["stability_threshold"] = e.threshold
        diag["stability_ratio"] = stability_ratio(value, e.threshold)
        diag["beyond_edge"] = diag["stability_ratio"] > 1
    return measured(value, diag, converged=res.converged, hvps=op.hvps)

"""Adam's preconditioned sharpness λmax(P⁻¹H), P from the optimizer state (Cohen et al. 2022).

P = (1 − β₁ᵗ)·diag(√(v_t/(1 − β₂ᵗ)) + ε) from Adam's `exp_avg_sq` (v_t, by parameter name) and
`step` (t). λmax(P⁻¹H) is the largest eigenvalue of the symmetric P^{−1/2} H P^{−1/2} (the same
eigenvalues), found by Lanczos under lambda_max's convergence contract. Adam is stable near a
point while λmax(P⁻¹H) < (2 + 2β₁)/((1 − β₁)η); give `learning_rate` to get that threshold and
the ratio. Needs the optimizer state in the measure's context (trajectories with optimizer
'adam' pass each checkpoint's; a notebook passes `optimizer_state=` to run_measure).
`curvature: "ggn"` uses P⁻¹G instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from tasks.engine.measures.base import CurvatureParams, attributes, measured

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext

NAME = "preconditioned_lambda_max"


class Params(CurvatureParams):
    beta1: float = Field(default=0.9, ge=0, lt=1, description="Adam's β₁.")
    beta2: float = Field(default=0.999, ge=0, lt=1, description="Adam's β₂.")
    eps: float = Field(default=1e-8, gt=0, le=1, description="Adam's ε.")
    learning_rate: float | None = Field(
        default=None, gt=0, le=1e6, description="η: report the edge (2+2β₁)/((1−β₁)η) and ratio."
    )
    tol: float | None = Field(
        default=None,
        gt=0,
        le=0.1,
        description="Relative accuracy asked for. Default: as tight as the model's dtype allows "
        "(float32: the products' rounding floor; float64: 1e-10). `converged` and "
        "diagnostics.limited_by as for lambda_max.",
    )
    max_iter: int = Field(default=300, ge=2, le=10_000, description="Lanczos steps at most.")


def run(ctx: MeasureContext, params: Params) -> dict:
    from tasks.engine.lanczos import lanczos
    from tasks.engine.preconditioner import (
        PreconditionedOperator,
        adam_preconditioner,
        state_from_tensors,
    )
    from tasks.engine.stability import edge, stability_ratio

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
        **attributes(res, "limited_by", "tol", "rounding_level"),
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

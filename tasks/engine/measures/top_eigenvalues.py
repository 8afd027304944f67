"""Top-k algebraic Hessian eigenvalues by thick-restart Lanczos, each with its error estimate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from tasks.engine.measures.lambda_max import (
    EigensolverParams,
    budget_diagnostics,
    lanczos_options,
)

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext

NAME = "top_eigenvalues"


class Params(EigensolverParams):
    k: int = Field(default=5, ge=1, le=200, description="How many of the largest eigenvalues.")
    max_iter: int = Field(
        default=400, ge=2, le=10_000, description="Lanczos steps (HVPs) at most, restarts included."
    )
    most_negative: bool = Field(default=False)
    return_eigenvectors: bool = Field(default=False)


def run(ctx: MeasureContext, params: Params) -> dict:
    from tasks.engine.lanczos import lanczos

    op = ctx.operator(params)
    res = lanczos(
        op,
        k=params.k,
        max_iter=params.max_iter,
        most_negative=params.most_negative,
        return_eigenvectors=params.return_eigenvectors,
        seed=params.seed,
        ctx=ctx,
        **lanczos_options(params),
    )
    diag: dict[str, Any] = {
        "residual_bounds": res.residual_bounds,
        "error_estimates": res.error_estimates,
        "iterations": res.iterations,
        "backend": op.backend,
        **budget_diagnostics(res),
    }
    if params.most_negative:
        diag["most_negative"] = res.most_negative
        diag["most_negative_bound"] = res.most_negative_bound
        diag["most_negative_error"] = res.most_negative_error
        diag["most_negative_converged"] = res.most_negative_converged
    if params.return_eigenvectors and res.eigenvectors is not None:
        diag["eigenvectors"] = res.eigenvectors.T.tolist()
    return {
        "value": res.eigenvalues,
        "converged": res.converged,
        "hvps": op.hvps,
        "diagnostics": diag,
    }

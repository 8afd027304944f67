"""Largest Hessian eigenvalue λmax by Lanczos, stopped on the Ritz residual bound."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tasks.engine.measures.base import CurvatureParams

NAME = "lambda_max"


class Params(CurvatureParams):
    tol: float = Field(
        default=1e-6,
        gt=0,
        le=0.1,
        description="Stop when the Ritz residual bound |β_k s_k| ≤ tol·|θ| (relative).",
    )
    max_iter: int = Field(default=300, ge=2, le=10_000, description="Lanczos steps at most.")
    most_negative: bool = Field(
        default=False, description="Also report the most negative (algebraically smallest) one."
    )
    return_eigenvectors: bool = Field(default=False, description="Include the eigenvector.")


def run(ctx: Any, params: Params) -> dict:
    from tasks.engine.lanczos import lanczos

    op = ctx.operator(params)
    res = lanczos(
        op,
        k=1,
        tol=params.tol,
        max_iter=params.max_iter,
        most_negative=params.most_negative,
        return_eigenvectors=params.return_eigenvectors,
        seed=params.seed,
        ctx=ctx,
    )
    diag: dict[str, Any] = {
        "residual_bound": res.residual_bounds[0],
        "iterations": res.iterations,
        "backend": op.backend,
    }
    if params.most_negative:
        diag["most_negative"] = res.most_negative
        diag["most_negative_bound"] = res.most_negative_bound
        diag["most_negative_converged"] = res.most_negative_converged
    if params.return_eigenvectors and res.eigenvectors is not None:
        diag["eigenvector"] = res.eigenvectors[:, 0].tolist()
    return {
        "value": res.eigenvalues[0],
        "converged": res.converged,
        "hvps": op.hvps,
        "diagnostics": diag,
    }

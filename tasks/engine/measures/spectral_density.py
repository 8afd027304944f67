"""Hessian spectral density by stochastic Lanczos quadrature, with an effective-rank figure."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tasks.engine.measures.base import CurvatureParams

NAME = "spectral_density"


class Params(CurvatureParams):
    runs: int = Field(default=5, ge=1, le=100, description="Independent Lanczos runs.")
    steps: int = Field(default=80, ge=4, le=2_000, description="Lanczos steps per run.")
    grid_points: int = Field(default=400, ge=16, le=10_000)
    bandwidth: float = Field(
        default=0.01, gt=0, le=1, description="Gaussian width as a share of the spectrum range."
    )
    zero_threshold: float = Field(
        default=1e-3,
        gt=0,
        le=1,
        description="An eigenvalue with |λ| ≤ threshold·λmax counts as near zero.",
    )


def run(ctx: Any, params: Params) -> dict:
    from tasks.engine.density import slq

    op = ctx.operator(params)
    est = slq(
        op,
        runs=params.runs,
        steps=params.steps,
        grid_points=params.grid_points,
        bandwidth=params.bandwidth,
        zero_threshold=params.zero_threshold,
        seed=params.seed,
        ctx=ctx,
    )
    return {
        "value": est.effective_rank,
        "converged": None,
        "hvps": op.hvps,
        "diagnostics": {
            "effective_rank": est.effective_rank,
            "near_zero_share": est.near_zero_share,
            "lambda_max": est.lambda_max,
            "lambda_min": est.lambda_min,
            "sigma": est.sigma,
            "grid": est.grid,
            "density": est.density,
            "nodes": est.nodes,
            "weights": est.weights,
        },
    }

"""Hessian spectral density by stochastic Lanczos quadrature; effective rank with an interval."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from tasks.engine.measures.base import CurvatureParams, attributes, measured

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext

NAME = "spectral_density"


EFFECTIVE_RANK_NOTE = (
    "centre of the Markov-Stieltjes bracket on the near-zero mass, averaged over runs; the "
    "interval adds the runs' 95% sampling error. Counting the nodes inside the threshold "
    "(effective_rank_naive) is biased by the nodes that straddle it; more steps narrow "
    "the bracket. It also allows for rounding: eigenvalues within rounding_level of the "
    "threshold may lie on either side (effective_rank_rounding is the width this adds)"
)


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
    max_basis: int = Field(
        default=100,
        ge=4,
        le=10_000,
        description="Memory budget: Lanczos vectors held at once per run. Runs of more steps "
        "reorthogonalise only against the most recent ones (a sliding window); the quadrature "
        "stays accurate, ghost copies of converged extreme eigenvalues share their weight.",
    )


def run(ctx: MeasureContext, params: Params) -> dict:
    from tasks.engine.density import slq

    op = ctx.operator(params)
    est = slq(op, **params.options(), ctx=ctx)
    diagnostics = {
        "effective_rank": est.effective_rank,
        "effective_rank_ci95": list(est.effective_rank_ci95),
        "effective_rank_naive": est.effective_rank_naive,
        "effective_rank_note": EFFECTIVE_RANK_NOTE,
        "effective_rank_rounding": est.effective_rank_rounding,
        "rounding_level": est.rounding_level,
        "basis_vectors_peak": est.basis_peak,
        **attributes(est, "near_zero_share", "lambda_max", "lambda_min", "sigma", "grid"),
        **attributes(est, "density", "nodes", "weights"),
    }
    return measured(est.effective_rank, diagnostics, hvps=op.hvps)

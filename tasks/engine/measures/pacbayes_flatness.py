"""PAC-Bayesian flatness 1/σ², σ the largest isotropic weight noise costing 0.1 train accuracy.

Jiang et al. 2020 (pacbayes.flatness): with z ~ N(0, I) on the selected weights,

    σ* = max { σ ∈ [0, σ_max] : acc(w) − E_z acc(w + σ z) ≤ target_drop },   value = 1/σ*²

found by bisection on [0, σ_max] (depth 15) with `samples` Monte Carlo draws per step (the same
draws at every step). A larger value means the train accuracy breaks under smaller noise: a
sharper solution. Not invariant to rescaling the layers of a ReLU network (see
pacbayes_mag_flatness). Classification (cross_entropy) only.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from pydantic import Field

from tasks.engine.measures.base import MeasureParams

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext

NAME = "pacbayes_flatness"


class Params(MeasureParams):
    target_drop: float = Field(
        default=0.1, gt=0, lt=1, description="Expected train-accuracy drop that defines σ*."
    )
    sigma_max: float = Field(
        default=2.0, gt=0, le=1000, description="Upper end of the bisection interval [0, σ_max]."
    )
    depth: int = Field(default=15, ge=1, le=60, description="Bisection steps.")
    samples: int = Field(
        default=10, ge=1, le=10_000, description="Monte Carlo noise draws per bisection step."
    )
    max_examples: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Estimate accuracies on the first N examples only (all when omitted).",
    )


def run(ctx: MeasureContext, params: Params) -> dict:
    from tasks.engine.perturbation import (
        flatness_result,
        flatness_search,
        isotropic_std,
        require_classification,
    )

    require_classification(ctx.problem, NAME)
    search = flatness_search(
        ctx.problem,
        isotropic_std(ctx.problem),
        target_drop=params.target_drop,
        sigma_max=params.sigma_max,
        depth=params.depth,
        samples=params.samples,
        seed=params.seed,
        max_examples=params.max_examples,
        ctx=ctx,
    )
    if not search.reached:
        warnings.warn(
            f"noise up to sigma_max={params.sigma_max} never cost {params.target_drop} "
            "accuracy: σ is capped at sigma_max, the value is an upper limit of the flatness "
            "measure's range, not a measurement (raise sigma_max)",
            stacklevel=2,
        )
    return flatness_result(search, params, "sigma")

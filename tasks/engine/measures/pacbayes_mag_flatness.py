"""Magnitude-aware PAC-Bayesian flatness 1/σ′², noise std √(σ′²wᵢ² + ε²) per weight.

Jiang et al. 2020 (pacbayes.mag.flatness): with z ~ N(0, I) and per-weight standard deviation
sᵢ(σ′) = √(σ′² wᵢ² + ε²), ε = 1e-3,

    σ′* = max { σ′ ∈ [0, σ_max] : acc(w) − E_z acc(w + s(σ′) ⊙ z) ≤ target_drop },
    value = 1/σ′*²

(bisection, depth 15, `samples` draws per step, the same draws at every step). σ′²wᵢ² + ε² is
the variance of the noise on weight i; its square root is what scales z (passing the variance
itself as the deviation is a known mistake). The noise is relative to each weight, so the
measure barely changes when a ReLU network's layers are rescaled (ε breaks exact invariance).
Classification (cross_entropy) only.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from pydantic import Field

from tasks.engine.measures.base import MeasureParams

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext

NAME = "pacbayes_mag_flatness"


class Params(MeasureParams):
    target_drop: float = Field(
        default=0.1, gt=0, lt=1, description="Expected train-accuracy drop that defines σ′*."
    )
    sigma_max: float = Field(
        default=2.0, gt=0, le=1000, description="Upper end of the bisection interval [0, σ_max]."
    )
    depth: int = Field(default=15, ge=1, le=60, description="Bisection steps.")
    samples: int = Field(
        default=10, ge=1, le=10_000, description="Monte Carlo noise draws per bisection step."
    )
    eps: float = Field(
        default=1e-3,
        ge=0,
        le=1,
        description="ε: the noise standard deviation left on a weight that is exactly zero.",
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
        magnitude_std,
        require_classification,
    )

    require_classification(ctx.problem, NAME)
    search = flatness_search(
        ctx.problem,
        magnitude_std(ctx.problem, params.eps),
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
            f"relative noise up to sigma_max={params.sigma_max} never cost "
            f"{params.target_drop} accuracy: σ′ is capped at sigma_max (raise sigma_max)",
            stacklevel=2,
        )
    result = flatness_result(search, params, "sigma_prime")
    result["diagnostics"]["eps"] = params.eps
    return result

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

from pydantic import Field

from tasks.contract.measures.base import first_examples
from tasks.contract.measures.pacbayes import SEARCH_EXAMPLES, FlatnessParams, drop_field

NAME = "pacbayes_mag_flatness"


class Params(FlatnessParams):
    target_drop: float = drop_field("σ′*")
    eps: float = Field(
        default=1e-3,
        ge=0,
        le=1,
        description="ε: the noise standard deviation left on a weight that is exactly zero.",
    )
    max_examples: int | None = first_examples(SEARCH_EXAMPLES)

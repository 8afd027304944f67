"""Adaptive or standard sharpness, worst case (Auto-PGD) or average case, ℓ∞ or ℓ2.

Worst case: max over ‖δ ⊘ c‖_p ≤ ρ of L(w+δ) − L(w); average case: E L(w+δ) − L(w) with
δ = ρ·c ⊙ N(0, I) (ℓ2) or ρ·c ⊙ U(−1, 1) (ℓ∞); c = |w| + η (adaptive) or 1 (standard). Mean
over chunks of m examples (m-sharpness). Note the ℓ2 average case draws δ far outside the ℓ2
ball of the same ρ: compare worst and average case at equal ρ only for ℓ∞. Typical ρ
(ResNet-18): adaptive ℓ∞ worst 1e-3…8e-3, standard ℓ2 worst 0.25…2, ℓ2 average 0.05…0.4.
`ci95` is the mean ± (t·std_error + rounding_level): the chunks' sampling error plus the
measured rounding of the loss differences (which dominates at small ρ); for the worst case it
does not include the maximisation's gap.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.contract.measures.base import MeasureParams

NAME = "adaptive_sharpness"


class Params(MeasureParams):
    kind: Literal["worst", "average"] = Field(
        default="worst", description="worst: Auto-PGD maximum; average: mean over noise."
    )
    norm: Literal["linf", "l2"] = Field(default="linf", description="Shape of the ball.")
    adaptive: bool = Field(default=True, description="Scale the ball by |w| (False: standard).")
    rho: float = Field(default=2e-3, gt=0, le=100, description="Radius of the ball.")
    eta: float = Field(
        default=0.0, ge=0, le=1, description="ASAM-style offset: scale by |w| + eta."
    )
    m: int = Field(default=128, ge=1, le=65_536, description="Examples per maximisation batch.")
    num_batches: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description="Chunks of m examples averaged (fewer when the data is shorter).",
    )
    iterations: int = Field(default=20, ge=1, le=10_000, description="Auto-PGD steps.")
    restarts: int = Field(default=1, ge=1, le=100, description="Auto-PGD random restarts.")
    samples: int = Field(default=10, ge=1, le=10_000, description="Average case: noise draws.")

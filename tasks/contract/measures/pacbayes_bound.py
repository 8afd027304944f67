"""PAC-Bayes upper bound on the test error of the Gaussian posterior N(w, σ²I) (Dziugaite & Roy).

Prior P = N(w₀, σ²I) (w₀ = the initial model's weights; 0 with a warning when none is given),
posterior Q = N(w, σ²I), KL = ‖w − w₀‖²/(2σ²). With ê the train 0-1 error of Q estimated from
`samples` weight draws and bounded above by kl⁻¹(ê | ln(2K/δ′)/samples),

    value = min over the σ grid of kl⁻¹( ê_upper | (KL + ln(2K√m/δ)) / m ),

K the grid size (a union bound over the grid: δ/K and δ′/K per point), m the examples used.
With probability ≥ 1 − δ − δ′ the test error of Q at the chosen σ is at most the value. It is
a bound, not a prediction: it is labelled so, and it is often loose (≥ 0.5) unless w stays
close to w₀. Jiang et al.'s pacbayes.orig is not reported here: it is defined at the flatness σ,
not at the bound's (see the pacbayes_orig measure).
Classification (cross_entropy) only.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from tasks.contract.measures.base import MeasureParams, first_examples
from tasks.contract.measures.pacbayes import open_unit

NAME = "pacbayes_bound"


class Params(MeasureParams):
    delta: float = open_unit(0.025, "Confidence of the PAC-Bayes bound (1 − δ).")
    delta_prime: float = open_unit(
        0.01, "Confidence of the Monte Carlo bound on the posterior's train error."
    )
    sigma_min: float = Field(default=1e-3, gt=0, le=100, description="Smallest σ of the grid.")
    sigma_max: float = Field(default=1.0, gt=0, le=100, description="Largest σ of the grid.")
    grid_size: int = Field(
        default=8, ge=1, le=64, description="σ values, log-spaced (the union bound pays ln K)."
    )
    samples: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Weight draws from the posterior per σ (each on all examples used).",
    )
    max_examples: int | None = first_examples("Use the first N examples (m = N); all when omitted.")

    @model_validator(mode="after")
    def _ordered(self) -> Params:
        if self.sigma_min > self.sigma_max:
            raise ValueError("sigma_min must not exceed sigma_max")
        return self

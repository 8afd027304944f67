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

from pydantic import Field

from tasks.contract.measures.base import CurvatureParams

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

"""Hessian spectral density by stochastic Lanczos quadrature; effective rank with an interval."""

from __future__ import annotations

from pydantic import Field

from tasks.contract.measures.base import CurvatureParams

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
    max_basis: int = Field(
        default=100,
        ge=4,
        le=10_000,
        description="Memory budget: Lanczos vectors held at once per run. Runs of more steps "
        "reorthogonalise only against the most recent ones (a sliding window); the quadrature "
        "stays accurate, ghost copies of converged extreme eigenvalues share their weight.",
    )

"""Largest Hessian eigenvalue λmax by Lanczos in a bounded basis, with its error estimate."""

from __future__ import annotations

from pydantic import Field

from tasks.contract.measures.eigen import EigensolverParams

NAME = "lambda_max"


class Params(EigensolverParams):
    max_iter: int = Field(
        default=300, ge=2, le=10_000, description="Lanczos steps (HVPs) at most, restarts included."
    )
    most_negative: bool = Field(
        default=False, description="Also report the most negative (algebraically smallest) one."
    )
    return_eigenvectors: bool = Field(default=False, description="Include the eigenvector.")

"""Top-k algebraic Hessian eigenvalues by thick-restart Lanczos, each with its error estimate."""

from __future__ import annotations

from pydantic import Field

from tasks.contract.measures.eigen import EigensolverParams

NAME = "top_eigenvalues"


class Params(EigensolverParams):
    k: int = Field(default=5, ge=1, le=200, description="How many of the largest eigenvalues.")
    max_iter: int = Field(
        default=400, ge=2, le=10_000, description="Lanczos steps (HVPs) at most, restarts included."
    )
    most_negative: bool = Field(default=False)
    return_eigenvectors: bool = Field(default=False)

"""Top-k algebraic Hessian eigenvalues by Lanczos with full reorthogonalisation."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tasks.engine.measures.base import MeasureParams

NAME = "top_eigenvalues"


class Params(MeasureParams):
    k: int = Field(default=5, ge=1, le=200, description="How many of the largest eigenvalues.")
    tol: float = Field(default=1e-6, gt=0, le=0.1, description="Relative Ritz residual bound.")
    max_iter: int = Field(default=400, ge=2, le=10_000)
    most_negative: bool = Field(default=False)
    return_eigenvectors: bool = Field(default=False)


def run(ctx: Any, params: Params) -> dict:
    raise NotImplementedError

"""Largest Hessian eigenvalue λmax by Lanczos, stopped on the Ritz residual bound."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tasks.engine.measures.base import MeasureParams

NAME = "lambda_max"


class Params(MeasureParams):
    tol: float = Field(
        default=1e-6,
        gt=0,
        le=0.1,
        description="Stop when the Ritz residual bound |β_k s_k| ≤ tol·|θ| (relative).",
    )
    max_iter: int = Field(default=300, ge=2, le=10_000, description="Lanczos steps at most.")
    most_negative: bool = Field(
        default=False, description="Also report the most negative (algebraically smallest) one."
    )
    return_eigenvectors: bool = Field(default=False, description="Include the eigenvector.")


def run(ctx: Any, params: Params) -> dict:
    raise NotImplementedError

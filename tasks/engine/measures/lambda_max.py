"""Largest Hessian eigenvalue λmax by Lanczos in a bounded basis, with its error estimate."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from tasks.engine.measures.eigen import EigensolverParams, eigen_measure

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext

NAME = "lambda_max"


class Params(EigensolverParams):
    max_iter: int = Field(
        default=300, ge=2, le=10_000, description="Lanczos steps (HVPs) at most, restarts included."
    )
    most_negative: bool = Field(
        default=False, description="Also report the most negative (algebraically smallest) one."
    )
    return_eigenvectors: bool = Field(default=False, description="Include the eigenvector.")


def run(ctx: MeasureContext, params: Params) -> dict:
    return eigen_measure(ctx, params)

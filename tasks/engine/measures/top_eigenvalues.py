"""top_eigenvalues computed by the Lanczos run it shares with lambda_max (measures/eigen.py).
Declared in tasks.contract.measures.top_eigenvalues."""

from __future__ import annotations

from tasks.contract.measures.top_eigenvalues import Params
from tasks.engine.context import MeasureContext
from tasks.engine.measures.eigen import eigen_measure


def run(ctx: MeasureContext, params: Params) -> dict:
    return eigen_measure(ctx, params, k=params.k)

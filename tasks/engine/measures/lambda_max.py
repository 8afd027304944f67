"""lambda_max computed by the Lanczos run it shares with top_eigenvalues (measures/eigen.py).
Declared in tasks.contract.measures.lambda_max."""

from __future__ import annotations

from tasks.contract.measures.lambda_max import Params
from tasks.engine.context import MeasureContext
from tasks.engine.measures.eigen import eigen_measure


def run(ctx: MeasureContext, params: Params) -> dict:
    return eigen_measure(ctx, params)

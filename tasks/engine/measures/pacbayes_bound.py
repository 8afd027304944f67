"""pacbayes_bound computed by tasks.engine.pacbayes (the σ grid and the kl⁻¹ bounds). Declared in
tasks.contract.measures.pacbayes_bound."""

from __future__ import annotations

from tasks.contract.measures.pacbayes_bound import NAME, Params
from tasks.engine.context import MeasureContext
from tasks.engine.pacbayes import bound_measure


def run(ctx: MeasureContext, params: Params) -> dict:
    return bound_measure(ctx, params, NAME)

"""pacbayes_orig computed at the flatness σ found by tasks.engine.pacbayes. Declared in
tasks.contract.measures.pacbayes_orig."""

from __future__ import annotations

from tasks.contract.measures.pacbayes_orig import NAME, Params
from tasks.engine.context import MeasureContext
from tasks.engine.pacbayes import orig_measure


def run(ctx: MeasureContext, params: Params) -> dict:
    return orig_measure(ctx, params, NAME)

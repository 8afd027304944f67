"""pacbayes_flatness computed by the σ search in tasks.engine.pacbayes, isotropic noise. Declared
in tasks.contract.measures.pacbayes_flatness."""

from __future__ import annotations

from tasks.contract.measures.pacbayes_flatness import NAME, Params
from tasks.engine.context import MeasureContext
from tasks.engine.pacbayes import flatness_measure

CAPPED = ", the value is an upper limit of the flatness measure's range, not a measurement"


def run(ctx: MeasureContext, params: Params) -> dict:
    return flatness_measure(ctx, params, NAME, capped=CAPPED)

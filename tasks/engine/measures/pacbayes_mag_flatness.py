"""pacbayes_mag_flatness computed by the σ search in tasks.engine.pacbayes, noise relative to each
weight. Declared in tasks.contract.measures.pacbayes_mag_flatness."""

from __future__ import annotations

from tasks.contract.measures.pacbayes_mag_flatness import NAME, Params
from tasks.engine.context import MeasureContext
from tasks.engine.pacbayes import flatness_measure


def run(ctx: MeasureContext, params: Params) -> dict:
    return flatness_measure(ctx, params, NAME, eps=params.eps)

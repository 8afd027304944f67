"""adaptive_sharpness computed by tasks.engine.sharpness: Auto-PGD (worst case) or noise draws
(average case) over chunks of m examples, with the interval and rounding level. Declared in
tasks.contract.measures.adaptive_sharpness."""

from __future__ import annotations

from tasks.contract.measures.adaptive_sharpness import Params
from tasks.engine.context import MeasureContext
from tasks.engine.measures.base import attributes, measured
from tasks.engine.sharpness import sharpness


def run(ctx: MeasureContext, params: Params) -> dict:
    est = sharpness(ctx.problem, **params.options(), ctx=ctx)
    work = "gradients" if params.kind == "worst" else "forward_passes"
    diagnostics = {
        **attributes(est, "error_increase", "std_error", "per_chunk", "chunks", "examples", "loss"),
        "ci95": list(est.ci95) if est.ci95 is not None else None,
        "rounding_level": est.rounding_level,
        work: est.gradients,
        **attributes(params, "kind", "norm", "adaptive", "rho"),
    }
    return measured(est.value, diagnostics)

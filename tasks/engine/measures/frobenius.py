"""frobenius computed by tasks.engine.trace.frobenius: E‖Hv‖² over Rademacher probes. Declared in
tasks.contract.measures.frobenius."""

from __future__ import annotations

from typing import Any

from tasks.contract.measures.frobenius import Params
from tasks.engine.context import MeasureContext
from tasks.engine.measures.base import measured
from tasks.engine.trace import frobenius


def run(ctx: MeasureContext, params: Params) -> dict:
    op = ctx.operator(params)
    est = frobenius(op, params.num_hvps, rtol=params.rtol, seed=params.seed, ctx=ctx)
    diagnostics: dict[str, Any] = {
        "std_error": est.std_error,
        "ci95": list(est.ci95) if est.ci95 is not None else None,
        "probes": est.probes,
        "rounding_level": est.rounding_level,
        "bytes_per_parameter": est.bytes_peak / max(op.dim, 1),
    }
    if est.limited_by is not None:
        diagnostics["limited_by"] = est.limited_by
    return measured(est.estimate, diagnostics, converged=est.converged, hvps=op.hvps)

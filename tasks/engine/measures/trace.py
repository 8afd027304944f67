"""trace computed by the estimator `method` names (tasks.engine.trace). Declared in
tasks.contract.measures.trace."""

from __future__ import annotations

from tasks.contract.measures.trace import Params
from tasks.engine.context import MeasureContext
from tasks.engine.measures.base import measured
from tasks.engine.trace import block_krylov, hutchinson, hutchpp, xtrace

XTRACE_INTERVAL_NOTE = (
    "approximate: XTrace's terms share their probes, so their spread understates the error "
    "(the nominal 95% interval covered 77-86% of seeded runs on test spectra); use "
    "method 'krylov' or 'hutch++' for an interval that holds"
)


def run(ctx: MeasureContext, params: Params) -> dict:
    op = ctx.operator(params)
    if params.method == "hutchinson":
        est = hutchinson(op, params.num_hvps, rtol=params.rtol, seed=params.seed, ctx=ctx)
    elif params.method == "hutch++":
        est = hutchpp(op, params.num_hvps, seed=params.seed, ctx=ctx)
    elif params.method == "xtrace":
        est = xtrace(op, params.num_hvps, seed=params.seed, ctx=ctx)
    else:
        est = block_krylov(op, params.num_hvps, seed=params.seed, ctx=ctx)
    diagnostics = {
        "std_error": est.std_error,
        "ci95": list(est.ci95) if est.ci95 is not None else None,
        "method": est.method,
        "probes": est.probes,
        "rounding_level": est.rounding_level,
        "bytes_per_parameter": est.bytes_peak / max(op.dim, 1),
    }
    if est.limited_by is not None:
        diagnostics["limited_by"] = est.limited_by
    if est.method == "xtrace":
        diagnostics["ci95_note"] = XTRACE_INTERVAL_NOTE
    return measured(est.estimate, diagnostics, converged=est.converged, hvps=op.hvps)

"""Hessian Frobenius norm ‖H‖_F from E‖Hv‖² over Rademacher probes; the 95% interval
includes the rounding level (`diagnostics.rounding_level`), and with `rtol` the result says
why it stopped (`diagnostics.limited_by`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from tasks.engine.measures.base import CurvatureParams, measured

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext

NAME = "frobenius"


class Params(CurvatureParams):
    num_hvps: int = Field(default=100, ge=2, le=100_000, description="Probe budget.")
    rtol: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Stop early once the standard error plus the rounding level ≤ "
        "rtol·estimate (or within 4× the rounding level); num_hvps first: not converged.",
    )


def run(ctx: MeasureContext, params: Params) -> dict:
    from tasks.engine.trace import frobenius

    op = ctx.operator(params)
    est = frobenius(op, params.num_hvps, rtol=params.rtol, seed=params.seed, ctx=ctx)
    diagnostics = {
        "std_error": est.std_error,
        "ci95": list(est.ci95) if est.ci95 is not None else None,
        "probes": est.probes,
        "rounding_level": est.rounding_level,
    }
    if est.limited_by is not None:
        diagnostics["limited_by"] = est.limited_by
    return measured(est.estimate, diagnostics, converged=est.converged, hvps=op.hvps)

"""Hessian trace by XTrace, Hutch++ or Hutchinson, with standard error and 95% interval.

XTrace (default) and Hutch++ deflate the top of the spectrum with a sketch and estimate the
remainder stochastically; on fast-decaying Hessian spectra they reach a given error with far
fewer HVPs than Hutchinson. Hutchinson alone supports an early stop on a relative tolerance.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tasks.engine.measures.base import MeasureParams

NAME = "trace"


class Params(MeasureParams):
    method: Literal["xtrace", "hutch++", "hutchinson"] = Field(
        default="xtrace", description="Estimator (see the measure's description)."
    )
    num_hvps: int = Field(default=100, ge=4, le=100_000, description="HVP budget.")
    rtol: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Hutchinson only: stop early once the standard error ≤ rtol·|estimate| "
        "(absolute values compared; at least 10 probes).",
    )


def run(ctx: Any, params: Params) -> dict:
    from tasks.engine.operator import HessianOperator
    from tasks.engine.trace import hutchinson, hutchpp, xtrace

    op = HessianOperator(ctx.problem, backend=ctx.hvp_backend)
    if params.method == "hutchinson":
        est = hutchinson(op, params.num_hvps, rtol=params.rtol, seed=params.seed, ctx=ctx)
    elif params.method == "hutch++":
        est = hutchpp(op, params.num_hvps, seed=params.seed, ctx=ctx)
    else:
        est = xtrace(op, params.num_hvps, seed=params.seed, ctx=ctx)
    return {
        "value": est.estimate,
        "converged": est.converged,
        "hvps": op.hvps,
        "diagnostics": {
            "std_error": est.std_error,
            "ci95": list(est.ci95) if est.ci95 is not None else None,
            "method": est.method,
            "probes": est.probes,
        },
    }

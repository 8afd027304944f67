"""Hessian trace by Hutchinson (Rademacher) or Hutch++, with standard error and 95% interval."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tasks.engine.measures.base import MeasureParams

NAME = "trace"


class Params(MeasureParams):
    method: Literal["hutchinson", "hutch++"] = Field(default="hutch++")
    num_hvps: int = Field(default=100, ge=3, le=100_000, description="HVP budget.")
    rtol: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Hutchinson only: stop early once the standard error ≤ rtol·|estimate| "
        "(absolute values compared; at least 10 probes).",
    )


def run(ctx: Any, params: Params) -> dict:
    from tasks.engine.operator import HessianOperator
    from tasks.engine.trace import hutchinson, hutchpp

    op = HessianOperator(ctx.problem, backend=ctx.hvp_backend)
    if params.method == "hutchinson":
        est = hutchinson(op, params.num_hvps, rtol=params.rtol, seed=params.seed, ctx=ctx)
    else:
        est = hutchpp(op, params.num_hvps, seed=params.seed, ctx=ctx)
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

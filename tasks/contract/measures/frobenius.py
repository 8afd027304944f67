"""Hessian Frobenius norm ‖H‖_F from E‖Hv‖² over Rademacher probes; the 95% interval
includes the rounding level (`diagnostics.rounding_level`), and with `rtol` the result says
why it stopped (`diagnostics.limited_by`)."""

from __future__ import annotations

from pydantic import Field

from tasks.contract.measures.base import CurvatureParams

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

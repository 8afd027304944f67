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
    raise NotImplementedError

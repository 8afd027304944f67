"""Hessian Frobenius norm ‖H‖_F from E‖Hv‖² over Rademacher probes."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tasks.engine.measures.base import MeasureParams

NAME = "frobenius"


class Params(MeasureParams):
    num_hvps: int = Field(default=100, ge=2, le=100_000, description="Probe budget.")
    rtol: float | None = Field(default=None, gt=0, le=1, description="Early stop on std error.")


def run(ctx: Any, params: Params) -> dict:
    raise NotImplementedError

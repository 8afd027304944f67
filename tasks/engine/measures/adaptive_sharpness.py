"""Adaptive or standard sharpness, worst case (Auto-PGD) or average case, ℓ∞ or ℓ2."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tasks.engine.measures.base import MeasureParams

NAME = "adaptive_sharpness"


class Params(MeasureParams):
    kind: Literal["worst", "average"] = Field(default="worst")
    norm: Literal["linf", "l2"] = Field(default="linf")
    adaptive: bool = Field(default=True, description="Scale the ball by |w| (False: standard).")
    rho: float = Field(default=2e-3, gt=0, le=100, description="Radius of the ball.")
    eta: float = Field(
        default=0.0, ge=0, le=1, description="ASAM-style offset: scale by |w| + eta."
    )
    m: int = Field(default=128, ge=1, le=65_536, description="Examples per maximisation batch.")
    num_batches: int = Field(default=8, ge=1, le=10_000, description="Batches averaged.")
    iterations: int = Field(default=20, ge=1, le=10_000, description="Auto-PGD steps.")
    restarts: int = Field(default=1, ge=1, le=100)
    samples: int = Field(default=10, ge=1, le=10_000, description="Average case: noise draws.")


def run(ctx: Any, params: Params) -> dict:
    raise NotImplementedError

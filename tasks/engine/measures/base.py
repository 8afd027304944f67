"""Parameters every measure shares: which parameters to look at, per-layer breakdown, seed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MeasureParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parameters: list[str] | None = Field(
        default=None,
        description="fnmatch patterns of parameter names to restrict the measure to (for "
        "example ['fc1.*']); all trainable parameters when omitted.",
    )
    per_layer: bool = Field(
        default=False,
        description="Also run the measure on each layer's parameters on their own and report "
        "the results under 'per_layer', keyed by module name.",
    )
    seed: int = Field(default=0, ge=0, description="Seed for random probes and starts.")

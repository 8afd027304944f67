"""Parameters every measure shares: which parameters to look at, per-layer breakdown, seed; and
for the curvature measures, which curvature matrix (Hessian or Gauss–Newton)."""

from __future__ import annotations

from typing import Literal

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


class CurvatureParams(MeasureParams):
    """For measures of a curvature matrix (λmax, top-k, trace, Frobenius norm, density): the
    context's `operator(params)` builds the matrix this field names."""

    curvature: Literal["hessian", "ggn"] = Field(
        default="hessian",
        description="Curvature matrix: 'hessian' (∇²L) or 'ggn', the generalised Gauss–Newton "
        "Σ_b (n_b/N) J_bᵀ H_b J_b (J the Jacobian of the model's outputs, H_b the Hessian of "
        "the loss with respect to them; positive semi-definite, the Fisher for cross-entropy).",
    )

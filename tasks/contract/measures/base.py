"""Parameters every measure shares: which parameters to look at, per-layer breakdown, seed; and
for the curvature measures, which curvature matrix (Hessian or Gauss–Newton). Also the
`max_examples` field several measures declare alike."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# chosen by the runner (parameters, per_layer) and the context (curvature), not the estimator
RUNNER_FIELDS = frozenset({"parameters", "per_layer", "curvature"})


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

    def options(self, *leave: str) -> dict[str, Any]:
        """The measure's own parameters and the seed, by name, but for those in `leave`: the
        keyword arguments of an estimator whose arguments are named like them."""
        return self.model_dump(exclude=set(RUNNER_FIELDS).union(leave))


class CurvatureParams(MeasureParams):
    """For measures of a curvature matrix (λmax, top-k, trace, Frobenius norm, density): the
    context's `operator(params)` builds the matrix this field names."""

    curvature: Literal["hessian", "ggn"] = Field(
        default="hessian",
        description="Curvature matrix: 'hessian' (∇²L) or 'ggn', the generalised Gauss–Newton "
        "Σ_b (n_b/N) J_bᵀ H_b J_b (J the Jacobian of the model's outputs, H_b the Hessian of "
        "the loss with respect to them; positive semi-definite, the Fisher for cross-entropy).",
    )


def first_examples(description: str) -> Any:
    """A `max_examples` field: use the first N examples only (all when omitted)."""
    return Field(default=None, ge=1, le=10_000_000, description=description)

"""Output margin: 10th percentile over the data of γᵢ = f(xᵢ)[yᵢ] − max_{j≠yᵢ} f(xᵢ)[j].

Jiang et al. 2020 take the 10th percentile of the margin over the training set (more robust
than the minimum, which one mislabelled example decides); a negative γᵢ is a misclassified
example. The raw margin is not scale-invariant: multiplying the last layer by α multiplies it
by α, so compare it across models only next to a norm (weight_norms). Percentiles interpolate
linearly between order statistics. Cross-entropy (classification) only.
"""

from __future__ import annotations

from pydantic import Field

from tasks.contract.measures.base import MeasureParams, first_examples

NAME = "output_margin"


class Params(MeasureParams):
    percentile: float = Field(
        default=10.0, ge=0, le=100, description="Which percentile of the margins is the value."
    )
    max_examples: int | None = first_examples("Use the first N examples only.")

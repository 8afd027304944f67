"""Output margin: 10th percentile over the data of γᵢ = f(xᵢ)[yᵢ] − max_{j≠yᵢ} f(xᵢ)[j].

Jiang et al. 2020 take the 10th percentile of the margin over the training set (more robust
than the minimum, which one mislabelled example decides); a negative γᵢ is a misclassified
example. The raw margin is not scale-invariant: multiplying the last layer by α multiplies it
by α, so compare it across models only next to a norm (weight_norms). Percentiles interpolate
linearly between order statistics. Cross-entropy (classification) only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from tasks.engine.measures.base import MeasureParams, first_examples, measured

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext

NAME = "output_margin"


class Params(MeasureParams):
    percentile: float = Field(
        default=10.0, ge=0, le=100, description="Which percentile of the margins is the value."
    )
    max_examples: int | None = first_examples("Use the first N examples only.")


def run(ctx: MeasureContext, params: Params) -> dict:
    import torch

    from tasks.engine.perturbation import class_labels, require_classification, subset

    problem = ctx.problem
    require_classification(problem, NAME)
    margins = []
    with torch.no_grad():
        for i, b in enumerate(subset(problem, params.max_examples)):
            out = problem.batch_outputs(b).double()
            if out.ndim != 2 or out.shape[1] < 2:
                raise ValueError(
                    f"{NAME} needs outputs of shape (n, classes ≥ 2), got {tuple(out.shape)}"
                )
            y = class_labels(b.targets)
            true = out.gather(1, y[:, None]).squeeze(1)
            others = out.scatter(1, y[:, None], float("-inf"))
            margins.append(true - others.max(dim=1).values)
            ctx.step(i + 1)
    gamma = torch.cat(margins).cpu()
    value = float(torch.quantile(gamma, params.percentile / 100.0))
    diagnostics = {
        "percentile": params.percentile,
        "mean": float(gamma.mean()),
        "median": float(torch.quantile(gamma, 0.5)),
        "min": float(gamma.min()),
        "share_negative": float((gamma < 0).double().mean()),
        "examples": int(gamma.numel()),
    }
    return measured(value, diagnostics)

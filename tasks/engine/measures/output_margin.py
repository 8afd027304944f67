"""output_margin computed from the model's outputs batch by batch, without gradients. Declared in
tasks.contract.measures.output_margin."""

from __future__ import annotations

import torch

from tasks.contract.measures.output_margin import NAME, Params
from tasks.engine.context import MeasureContext
from tasks.engine.measures.base import measured
from tasks.engine.perturbation import class_labels, require_classification, subset


def run(ctx: MeasureContext, params: Params) -> dict:
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

"""weight_norms computed from the parameters directly (no products); ‖w − w₀‖ from the context's
initial weights. Declared in tasks.contract.measures.weight_norms."""

from __future__ import annotations

from typing import Any

from tasks.contract.measures.weight_norms import Params
from tasks.engine.context import MeasureContext
from tasks.engine.measures.base import measured


def run(ctx: MeasureContext, params: Params) -> dict:
    problem = ctx.problem
    per_tensor: dict[str, float] = {}
    total_sq = 0.0
    for name, p in zip(problem.names, problem.params, strict=True):
        sq = float(p.detach().double().pow(2).sum())
        per_tensor[name] = sq**0.5
        total_sq += sq
    diag: dict[str, Any] = {
        "per_tensor": per_tensor,
        "sum_of_squared_frobenius": total_sq,
        "num_parameters": problem.dim,
    }
    w0 = ctx.initial_vector()
    if w0 is None:
        diag["distance_from_init"] = None
        diag["note"] = "no initial model (w₀) given: ‖w − w₀‖ not computed"
    else:
        diff = problem.parameter_vector().double() - w0.double()
        diag["distance_from_init"] = float(diff.norm())
        diag["per_tensor_distance"] = {
            name: float(d.norm())
            for name, d in zip(problem.names, problem.unflatten(diff), strict=True)
        }
    ctx.step(1, total_sq**0.5)  # one step: progress and a chance to cancel, like the others
    return measured(total_sq**0.5, diag)

"""Weight norms: ‖w‖₂ over the selected parameters, per tensor, and ‖w − w₀‖ from initialisation.

    value = ‖w‖₂ = √(Σ_k ‖W_k‖²_F)

Diagnostics: each tensor's ‖W_k‖_F, the sum of squared Frobenius norms Σ_k ‖W_k‖²_F
(Jiang et al.'s param_norm), and, when the initial weights w₀ are given, ‖w − w₀‖₂ with each
tensor's ‖W_k − W_k⁰‖_F (‖w − w₀‖² is Jiang et al.'s frob-distance). The norms are trivial
baselines every flatness measure should be shown beside (SCIENCE.md). No HVPs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.engine.measures.base import MeasureParams, measured

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext

NAME = "weight_norms"


class Params(MeasureParams):
    pass


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

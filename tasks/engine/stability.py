"""The edge of stability of each optimizer, and overlaps split at the edge. No torch.

On a quadratic with curvature λ along some direction, each optimizer's iteration along it is a
linear recurrence; it diverges once λ passes a threshold that depends on the optimizer:

- gradient descent, w ← w − η∇L: the error is multiplied by 1 − ηλ, stable while λ < 2/η
  (Cohen et al. 2021);
- heavy-ball momentum β (PyTorch SGD's `momentum`, dampening 0: v ← βv + ∇L, w ← w − ηv):
  the characteristic polynomial z² − (1 + β − ηλ)z + β has both roots inside the unit circle
  while λ < (2 + 2β)/η — 3.8/η at β = 0.9;
- Nesterov momentum (PyTorch's `nesterov=True`: w ← w − η(∇L + βv)): the polynomial
  z² − (1 + β)(1 − ηλ)z + β(1 − ηλ) at z = −1 gives λ < (2 + 2β)/((1 + 2β)η)
  (Cohen et al. 2021, appendix) — 1.36/η at β = 0.9;
- Adam with β₁ (Cohen et al. 2022, "Adaptive gradient methods at the edge of stability"):
  with the preconditioner P = (1 − β₁ᵗ)·diag(√(v_t/(1 − β₂ᵗ)) + ε) frozen, Adam is
  preconditioned heavy-ball momentum (EMA form) on P⁻¹H, stable while
  λmax(P⁻¹H) < (2 + 2β₁)/((1 − β₁)η) — 38/η at β₁ = 0.9. The raw λmax·η/2 means nothing here.

`edge` returns the threshold and which sharpness it applies to; `stability_ratio` is that
sharpness over the threshold (above 1: beyond the edge). For gradient descent it is λmax·η/2,
the figure the service reported before optimizers were known to it.

`edge_split` relates eigenvector rotation to instability (Wang & Roberts 2024): the overlaps of
the steps that start beyond the edge, reported apart from those that start below it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Edge:
    threshold: float  # the largest stable sharpness
    sharpness: str  # "lambda_max" or "preconditioned_lambda_max": what is compared with it
    formula: str  # the threshold in words, for the result


def edge(
    optimizer: str,
    learning_rate: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    beta1: float = 0.9,
) -> Edge:
    """The edge of stability of `optimizer` ("gd", "sgd", "adam") at learning rate η."""
    eta = float(learning_rate)
    if not eta > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if optimizer == "gd":
        return Edge(2.0 / eta, "lambda_max", "2/η")
    if optimizer == "sgd":
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov:
            return Edge(
                (2 + 2 * momentum) / ((1 + 2 * momentum) * eta),
                "lambda_max",
                "(2 + 2β)/((1 + 2β)η) (Nesterov)",
            )
        return Edge((2 + 2 * momentum) / eta, "lambda_max", "(2 + 2β)/η (heavy ball)")
    if optimizer == "adam":
        if not 0.0 <= beta1 < 1.0:
            raise ValueError(f"beta1 must be in [0, 1), got {beta1}")
        return Edge(
            (2 + 2 * beta1) / ((1 - beta1) * eta),
            "preconditioned_lambda_max",
            "(2 + 2β₁)/((1 − β₁)η) on λmax(P⁻¹H)",
        )
    raise ValueError(f"optimizer name must be 'gd', 'sgd' or 'adam', got {optimizer!r}")


def stability_ratio(sharpness: float, threshold: float) -> float:
    """sharpness / threshold: above 1 the point is beyond the edge."""
    return float(sharpness) / float(threshold)


def _group(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {"pairs": 0, "starts": []}
    top = [r["top_overlap"] for r in rows]
    sub = [r["subspace_overlap"] for r in rows]
    return {
        "pairs": len(rows),
        "starts": [r["start"] for r in rows],
        "mean_top_overlap": statistics.fmean(top),
        "median_top_overlap": statistics.median(top),
        "min_top_overlap": min(top),
        "mean_subspace_overlap": statistics.fmean(sub),
        "median_subspace_overlap": statistics.median(sub),
        "min_subspace_overlap": min(sub),
    }


def edge_split(
    ratios: Sequence[float | None], overlaps: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Overlaps of the pairs (t, t+1) whose start t is beyond the edge (ratio > 1) apart from
    those whose start is below it; `ratios[t]` is checkpoint t's stability ratio. Says in
    words which group turned more (a lower overlap: more rotation), or why it cannot."""
    beyond, below = [], []
    for o in overlaps:
        r = ratios[o["start"]] if o["start"] < len(ratios) else None
        if r is None or math.isnan(r):
            continue
        (beyond if r > 1.0 else below).append(o)
    out: dict[str, Any] = {"beyond_edge": _group(beyond), "below_edge": _group(below)}
    if not beyond or not below:
        where = "beyond" if not beyond else "below"
        out["summary"] = (
            f"no step starts {where} the edge of stability, so rotation past the edge cannot "
            "be compared with rotation below it"
        )
        return out
    a, b = out["beyond_edge"], out["below_edge"]
    more = "more" if a["mean_top_overlap"] < b["mean_top_overlap"] else "less"
    out["summary"] = (
        f"the top eigenvector turned {more} on steps past the edge: mean overlap "
        f"{a['mean_top_overlap']:.3f} over {a['pairs']} step(s) beyond it against "
        f"{b['mean_top_overlap']:.3f} over {b['pairs']} below it (top-k subspace: "
        f"{a['mean_subspace_overlap']:.3f} against {b['mean_subspace_overlap']:.3f}); "
        "a descriptive comparison of few steps, not a test"
    )
    return out

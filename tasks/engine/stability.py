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
the figure the service reported before optimizers were known to it. How the overlaps of a
trajectory split at the edge is part of the trajectory record (tasks.contract.edge_analysis).
"""

from __future__ import annotations

from dataclasses import dataclass


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

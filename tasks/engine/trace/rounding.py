"""The rounding level of a trace or Frobenius estimate, which every interval includes.

The operator's products are computed in the model's dtype (float32 usually; unit roundoff
eps) and summed in float64: the computed product is H̃v = Hv + δ(v), with δ a part that repeats
in every product (the forward pass's rounding, kept in the graph) and a part that changes
from product to product. Every trace estimator is a combination Σ_i c_i x_iᵀH̃x_i of quadratic
forms, so its rounding is Σ_i c_i x_iᵀδ(x_i). The changing part is random and already in the
probes' spread; the repeating part is a bias that no number of probes removes, and an exact
sum (probes = dim) has only it. Each form x_iᵀH̃x_i = Σ_j x_ij (H̃x_i)_j is bounded the
classical way, by a few units of eps relative to its terms' absolute mass
a(x) = Σ_j |x_j (H̃x)_j|, added with the worst sign:

    rounding level = ROUNDING_FACTOR · eps · Σ_i |c_i| · a(x_i)      (ROUNDING_FACTOR = 2)

For a Rademacher probe E a(v) = Σ_j E|H_jj + Σ_{k≠j} H_jk v_j v_k| ≥ Σ_j |H_jj|, so the mean
mass of Hutchinson's probes is at least the trace's absolute diagonal mass. On the float32 test
models (tests/engine/test_trace_rounding.py: five architectures and a CNN on 1,000 examples,
true Hessians from their float64 copies) the rounding of the products' own trace was at most
0.36·eps·Σ_j|H_jj| (0.05-3 eps absolute), under a fifth of this level. It is an a-priori
estimate, not a theorem: it assumes each product's entries are accurate to a few eps of their
terms, as they were on every test model.

The Frobenius estimate is √(mean ‖H̃v‖²); ‖H̃v‖² − ‖Hv‖² ≈ 2(Hv)ᵀδ(v) ≤ 2‖Hv‖‖δ(v)‖ and
‖δ(v)‖ ≤ ROUNDING_FACTOR·eps·‖H‖_F·‖v‖ (the products' rounding relative to the matrix),
so with ‖v‖ = √dim the level of ‖H‖_F is ROUNDING_FACTOR·eps·√dim·‖H‖_F (Cauchy–Schwarz with
the probe's whole length: conservative by about √dim for a δ unaligned with Hv).

Intervals add the level to the t interval's half-width on both sides (the bias has no known
sign), so an exact trace reports [v − level, v + level], never [v, v].
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from tasks.engine import convergence
from tasks.engine.convergence import NotConvergedWarning
from tasks.engine.precision import ROUNDING_FACTOR


def abs_mass(V: Tensor, HV: Tensor) -> Tensor:
    """a(v) = Σ_j |v_j (Hv)_j| for each column: the absolute mass of the terms of vᵀHv."""
    return (V * HV).abs().sum(dim=0)


def quadratic_rounding(eps: float, mass: float) -> float:
    """ROUNDING_FACTOR · eps · mass: the rounding level of forms with that absolute mass."""
    return ROUNDING_FACTOR * eps * mass


def frobenius_rounding(eps: float, dim: int, norm: float) -> float:
    """ROUNDING_FACTOR · eps · √dim · ‖H‖_F: the rounding level of the Frobenius estimate."""
    return ROUNDING_FACTOR * eps * math.sqrt(dim) * norm


def widen(
    ci: tuple[float, float] | None, level: float, *, floor: float | None = None
) -> tuple[float, float] | None:
    """The interval widened by `level` on both sides (the lower end kept ≥ `floor`)."""
    if ci is None:
        return None
    lo = ci[0] - level
    return (lo if floor is None else max(lo, floor), ci[1] + level)


def stop_reason(se: float, estimate: float, rtol: float, level: float, dtype: torch.dtype) -> str:
    """Why a probe loop with this standard error may stop: convergence's `classify` of the
    error se + level (the interval's parts) against rtol·|estimate| and the rounding level."""
    return convergence.classify(se + level, rtol * abs(estimate), level, dtype)


def warn_budget(
    method: str, se: float, estimate: float, rtol: float, level: float, probes: int
) -> None:
    """The NotConvergedWarning of a probe loop its budget stopped: what was reached, the
    budget parameter, and about how many probes would stop it (se falls as 1/√probes, and
    the loop stops once se ≤ max(rtol·|estimate| − level, (ROUNDING_MULTIPLE − 1)·level))."""
    target = rtol * abs(estimate)
    enough = max(target - level, (convergence.ROUNDING_MULTIPLE - 1) * level)
    need = probes * (se / enough) ** 2 if enough > 0 else math.inf
    more = f"about {need:.3g} probes" if math.isfinite(need) else "more probes"
    warnings.warn(
        f"{method} did NOT converge: stopped by its probe budget (num_hvps={probes}) with "
        f"standard error {se:.3g} + rounding level {level:.3g} > rtol·|estimate| = "
        f"{target:.3g}; raise num_hvps ({more} would stop it) or loosen rtol",
        NotConvergedWarning,
        stacklevel=4,
    )

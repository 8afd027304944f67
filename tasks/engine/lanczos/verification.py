"""The wanted Ritz vectors checked under fresh products.

The residual bound |β s_n| rests on the Lanczos relation as computed. Below float64 every
product rounds differently, and every thick restart adds rounding to the relation, so there
each wanted Ritz vector y is multiplied once more: its measured residual ‖H̃y − θy‖/‖y‖ enters
the error estimate, and for products below float64 the rounding level is raised to the
measured size ‖H̃(3y)/3 − H̃y‖ of the products' rounding when that is larger (scaling by 3
changes every rounding; a power of two would not)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from tasks.engine.convergence import ROUNDING_MULTIPLE
from tasks.engine.lanczos.state import LanczosState
from tasks.engine.precision import rounding_level

#: products with a unit roundoff above this are not float64: their residuals are measured
FLOAT64_EPS_LIMIT = 1e-12


@dataclass
class ResidualCheck:
    """The wanted Ritz vectors' residuals under fresh products, and the rounding level."""

    measured: list[float]  # ‖H̃y − θy‖/‖y‖, top Ritz values first
    level: float
    vectors: list[Tensor] = field(default_factory=list)  # the Ritz vectors, when kept
    bottom: float | None = None  # the most negative one's residual
    bottom_vector: Tensor | None = None


def needs_measuring(eps: float, restarts: int) -> bool:
    """Whether the bound alone may not be trusted: products below float64 (their rounding
    differs from product to product), or a restarted basis."""
    return eps > FLOAT64_EPS_LIMIT or restarts > 0


def measure_residuals(state: LanczosState, keep: bool, products: bool = True) -> ResidualCheck:
    """One product per wanted Ritz vector (the top k, then the most negative when wanted):
    its residual, and below float64 the products' rounding measured on the first. Without
    `products` only the vectors (for `keep`)."""
    b = state.budget
    order = state.top_order().tolist()
    wanted = [*order, *([0] if b.most_negative else [])]
    out = ResidualCheck([], rounding_level(b.eps, state.scale))
    for rank, i in enumerate(wanted):
        # y in the basis' dtype: what the products round to anyway (the model's dtype), and
        # the residual bound min|λ − θ| ≤ ‖Hy − θy‖/‖y‖ holds for any vector y
        y = state.ritz_vector(i, dtype=b.basis_dtype)
        top = rank < len(order)
        if not products:
            if top:
                out.vectors.append(y)
            else:
                out.bottom_vector = y
            continue
        hy3 = None
        if rank == 0 and b.eps > FLOAT64_EPS_LIMIT:
            hy3 = state.operator.matvec(3.0 * y).to(torch.float64).div_(3.0)
        hy = state.operator.matvec(y).to(torch.float64)
        if hy3 is not None:
            out.level = max(out.level, float(hy3.sub_(hy).norm()))
            del hy3
        res = float(hy.sub_(y, alpha=float(state.theta[i])).norm() / y.norm())
        del hy
        if top:
            out.measured.append(res)
            if keep:
                out.vectors.append(y)
        else:
            out.bottom = res
            out.bottom_vector = y if keep else None
    return out


def error_estimates(check: ResidualCheck, bounds: Tensor, order: list[int]) -> list[float]:
    """error estimate = max(residual bound, measured residual + rounding level)."""
    return [
        max(float(bounds[i]), r + check.level) for i, r in zip(order, check.measured, strict=True)
    ]


def bottom_error(check: ResidualCheck, bounds: Tensor) -> float:
    """The most negative eigenvalue's error estimate from its measured residual."""
    assert check.bottom is not None
    return max(float(bounds[0]), check.bottom + check.level)


def meets_contract(check: ResidualCheck, state: LanczosState) -> bool:
    """Whether the measured error estimates meet the contract: within the target or within
    ROUNDING_MULTIPLE × the rounding level, for every wanted eigenvalue."""
    n = int(state.theta.numel())
    order = list(range(n - 1, n - 1 - len(check.measured), -1))
    top_target, bottom_target = state.targets()
    floor = ROUNDING_MULTIPLE * check.level
    allowed = [max(float(t), floor) for t in top_target.flip(0)]
    errors = error_estimates(check, state.bounds, order)
    ok = all(e <= a for e, a in zip(errors, allowed, strict=True))
    if check.bottom is not None:
        ok = ok and bottom_error(check, state.bounds) <= max(bottom_target, floor)
    return ok and len(check.measured) == state.budget.k

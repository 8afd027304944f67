"""The convergence contract every iterative measure reports: what `converged` means and why a
run stopped (`diagnostics.limited_by`), in one vocabulary.

An iterative estimate is `converged` when its error estimate is within the accuracy asked for
(`max(tol·|value|, atol)`) *or* within `ROUNDING_MULTIPLE` times the rounding level of the
products it was computed from (about eps·‖H‖ for the model's dtype; no further step can
certify an answer more finely than that). `limited_by` names which:

- ``"tolerance"``: the requested accuracy was met;
- ``"<dtype> rounding"`` (for example ``"float32 rounding"``): the answer is as accurate as
  products in that dtype allow, and better than the requested accuracy cannot be certified;
- ``"iteration budget"``: `max_iter` (or the probe budget) stopped the run first;
- ``"basis budget"``: the memory budget (`max_basis`) stopped the run first;
- ``"time"``: a time budget stopped the run first;
- ``"search range"``: a search ended at the edge of the range it was given (the PAC-Bayes
  flatness searches' `sigma_max`), so the answer is that edge, not a measurement.

The first two are converged; the others are budgets: not converged, and only they may raise a
NotConvergedWarning, whose text names the budget and the parameter that raises it.

The default `tol` of the eigenvalue measures is "as tight as the dtype allows"
(`default_tol`): products below float64 stop at their rounding floor (limited_by
``"float32 rounding"`` on a float32 model), float64 products at `FLOAT64_TOL` relative.

This module imports no torch at load time (the registry loads the measure modules, which
name these values, without it); `rounding` and `default_tol` take a torch dtype.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import torch

TOLERANCE: Final = "tolerance"
ITERATION_BUDGET: Final = "iteration budget"
BASIS_BUDGET: Final = "basis budget"
TIME: Final = "time"
SEARCH_RANGE: Final = "search range"
BUDGETS: Final = (ITERATION_BUDGET, BASIS_BUDGET, TIME, SEARCH_RANGE)

#: an error estimate within this multiple of the rounding level counts as converged
ROUNDING_MULTIPLE: Final = 4.0

#: the default relative tol for float64 products (float32 and lower stop at rounding)
FLOAT64_TOL: Final = 1e-10


class NotConvergedWarning(UserWarning):
    """A budget (max_iter, the basis, time, a search range) stopped an estimate before its
    error estimate met the tolerance or the rounding floor."""


def rounding(dtype: torch.dtype) -> str:
    """The `limited_by` value of an answer as accurate as products in `dtype` allow."""
    return f"{str(dtype).removeprefix('torch.')} rounding"


def default_tol(dtype: torch.dtype) -> float:
    """The relative tol used when none is given: `FLOAT64_TOL` for float64 (or wider)
    products; 0 below float64, so that the run stops at the products' rounding floor and
    reports limited_by "<dtype> rounding"."""
    import torch

    return FLOAT64_TOL if torch.finfo(dtype).eps <= torch.finfo(torch.float64).eps else 0.0


def is_converged(limited_by: str) -> bool:
    """Whether a `limited_by` value says the estimate converged (tolerance or rounding)."""
    return limited_by == TOLERANCE or limited_by.endswith(" rounding")


def classify(
    error: float,
    target: float,
    rounding_level: float,
    dtype: torch.dtype,
    budget: str = ITERATION_BUDGET,
) -> str:
    """Why an estimate with this error estimate stopped: `TOLERANCE` when error ≤ target,
    the dtype's rounding when error ≤ ROUNDING_MULTIPLE · rounding_level, else `budget` (the
    budget that stopped the run; the caller knows which)."""
    if error <= target:
        return TOLERANCE
    if error <= ROUNDING_MULTIPLE * rounding_level:
        return rounding(dtype)
    return budget


def worst(limited_by: Iterable[str]) -> str:
    """The `limited_by` of a result made of several estimates (the top-k eigenvalues): a
    budget if any was stopped by one, else rounding if any was limited by it, else
    tolerance."""
    values = list(limited_by)
    for v in values:
        if not is_converged(v):
            return v
    return next((v for v in values if v != TOLERANCE), TOLERANCE)

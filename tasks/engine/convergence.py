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
- ``"time"``: a time budget stopped the run first.

The first two are converged; the last three are not, and only they may raise a
NotConvergedWarning, whose text names the budget and the parameter that raises it.
"""

from __future__ import annotations

from typing import Final

import torch

TOLERANCE: Final = "tolerance"
ITERATION_BUDGET: Final = "iteration budget"
BASIS_BUDGET: Final = "basis budget"
TIME: Final = "time"
BUDGETS: Final = (ITERATION_BUDGET, BASIS_BUDGET, TIME)

#: an error estimate within this multiple of the rounding level counts as converged
ROUNDING_MULTIPLE: Final = 4.0


def rounding(dtype: torch.dtype) -> str:
    """The `limited_by` value of an answer as accurate as products in `dtype` allow."""
    return f"{str(dtype).removeprefix('torch.')} rounding"


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

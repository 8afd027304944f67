"""Trivial baselines: numbers anyone can compute without a Hessian.

A measure is worth its cost only if it ranks and predicts the gaps better than these
(docs/studies.md; on small CPU sweeps λmax reached τ +0.41 where 1/learning rate alone
reached +0.25). Each gets exactly the statistics a measure gets.

    1/learning_rate            smaller steps, sharper minima, often a larger gap
    learning_rate/batch_size   the SGD noise scale (Jastrzębski et al. 2017)
    weight_norm                ‖w‖₂ over all parameters, from the job's `weight_norms` result
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

INVERSE_LR = "1/learning_rate"
LR_OVER_BS = "learning_rate/batch_size"
WEIGHT_NORM = "weight_norm"
NAMES: tuple[str, ...] = (INVERSE_LR, LR_OVER_BS, WEIGHT_NORM)

# The result of this measure is a baseline, not a measure under test.
WEIGHT_NORMS_MEASURE = "weight_norms"
# Keys tried, in order, when the weight_norms value is a mapping rather than a number.
_NORM_KEYS = ("l2", "norm", "frobenius", "total", "weight_norm")


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) and v > 0 else None


def weight_norm(value: Any) -> float | None:
    """‖w‖ from a weight_norms result value: the number itself, or the first of
    l2 / norm / frobenius / total / weight_norm when it is a mapping."""
    if isinstance(value, Mapping):
        for key in _NORM_KEYS:
            if (found := _positive(value.get(key))) is not None:
                return found
        return None
    return _positive(value)


def baseline_values(
    hyperparameters: Mapping[str, Any], weight_norms_value: Any = None
) -> dict[str, float | None]:
    """The three baselines for one model; None where the inputs are missing or not positive
    numbers (the baseline is then left out for that model)."""
    lr = _positive(hyperparameters.get("learning_rate"))
    bs = _positive(hyperparameters.get("batch_size"))
    return {
        INVERSE_LR: 1.0 / lr if lr else None,
        LR_OVER_BS: lr / bs if lr and bs else None,
        WEIGHT_NORM: weight_norm(weight_norms_value) if weight_norms_value is not None else None,
    }

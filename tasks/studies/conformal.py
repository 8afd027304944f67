"""Prediction intervals from leave-one-out residuals, with finite-sample coverage.

Two cases, both distribution-free under exchangeability of the models:

- A model whose gap is unknown (a new point x): jackknife+ (Barber, Candès, Ramdas, Tibshirani
  2021). With the n fold models μ₋ᵢ and LOO residuals Rᵢ = |yᵢ − μ₋ᵢ(xᵢ)|,

      lower = the ⌊α(n+1)⌋-th smallest of  μ₋ᵢ(x) − Rᵢ
      upper = the ⌈(1−α)(n+1)⌉-th smallest of μ₋ᵢ(x) + Rᵢ,      α = 1 − level.

  Coverage is guaranteed ≥ 1 − 2α and is ≈ 1 − α in practice.

- A model of the study whose gap is known, shown as it would have been predicted without it
  (honest): its LOO prediction ± the ⌈level·(m+1)⌉-th smallest of the other m = n−1 LOO
  residuals (split conformal with the other models' LOO residuals as the calibration set).

When the rank exceeds the number of residuals (too few models for the level: n ≥ 9 is needed
for 0.9), the interval is unbounded: (−∞, +∞). Callers clip it to the gap's natural range.
"""

from __future__ import annotations

import math

import numpy as np


def _kth_smallest(values: np.ndarray, k: int) -> float:
    """1-based rank; −∞ below 1, +∞ above the count."""
    if k < 1:
        return -math.inf
    if k > values.size:
        return math.inf
    return float(np.partition(values, k - 1)[k - 1])


def jackknife_plus(
    fold_predictions: np.ndarray, residuals: np.ndarray, level: float
) -> tuple[float, float]:
    """The jackknife+ interval at a new point from μ₋ᵢ(x) (fold_predictions) and the LOO
    residuals yᵢ − μ₋ᵢ(xᵢ) (their absolute values are used)."""
    mu = np.asarray(fold_predictions, dtype=float)
    r = np.abs(np.asarray(residuals, dtype=float))
    if mu.shape != r.shape:
        raise ValueError(f"{mu.size} fold predictions but {r.size} residuals")
    n = r.size
    upper_rank = math.ceil(level * (n + 1) - 1e-9)
    lower_rank = n + 1 - upper_rank  # = ⌊α(n+1)⌋ up to rounding of level
    return _kth_smallest(mu - r, lower_rank), _kth_smallest(mu + r, upper_rank)


def loo_interval(center: float, other_residuals: np.ndarray, level: float) -> tuple[float, float]:
    """center ± the ⌈level·(m+1)⌉-th smallest |residual| of the m other models."""
    r = np.abs(np.asarray(other_residuals, dtype=float))
    q = _kth_smallest(r, math.ceil(level * (r.size + 1) - 1e-9))
    return center - q, center + q


def clip(interval: tuple[float, float], low: float | None, high: float | None) -> tuple:
    """Clip to the gap's natural range (e.g. [−1, 1] for an accuracy gap)."""
    lo, hi = interval
    if low is not None:
        lo, hi = max(lo, low), max(hi, low)
    if high is not None:
        lo, hi = min(lo, high), min(hi, high)
    return lo, hi

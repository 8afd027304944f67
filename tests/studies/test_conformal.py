"""Conformal intervals cover held-out points at their nominal rate.

Synthetic exchangeable data (gap = 2x + N(0, 1)), n = 10 models, many seeded repetitions.
With n = 10 the rank ⌈level·(n+1)⌉ differs from a naive ⌈level·n⌉ (10 vs 9 at 0.9, 9 vs 8
at 0.8), which would cover about 9/11 ≈ 0.82 and 8/11 ≈ 0.73 instead: the tolerance (three
binomial standard errors, plus the jackknife+ slack) catches that."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.studies.conformal import clip, jackknife_plus, loo_interval
from tasks.studies.predictor import nested_loo

N = 10
REPS = 1000


def _coverage(level: float) -> tuple[float, float]:
    new = loo = 0
    for seed in range(REPS):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(N + 1, 1))
        y = 2 * x[:, 0] + rng.normal(size=N + 1)
        fit = nested_loo(x[:N], y[:N], [(0,)])
        lo, hi = jackknife_plus(fit.fold_predictions(x[N]), fit.residuals, level)
        new += lo <= y[N] <= hi
        lo, hi = loo_interval(float(fit.loo_predictions[0]), fit.residuals[1:], level)
        loo += lo <= y[0] <= hi
    return new / REPS, loo / REPS


@pytest.mark.parametrize("level", [0.9, 0.8])
def test_intervals_cover_at_the_nominal_level(level: float) -> None:
    new, loo = _coverage(level)
    se = math.sqrt(level * (1 - level) / REPS)
    # jackknife+ at a new point: ≈ ⌈level(n+1)⌉/(n+1) ≥ level
    assert level - 3 * se <= new <= level + 1 / (N + 1) + 3 * se, new
    # a study member's own leave-one-out interval (n − 1 other residuals): ≈ level
    assert level - 3 * se - 0.01 <= loo <= level + 1 / N + 3 * se, loo


def test_ranks_by_hand() -> None:
    # residuals 1..9 (m = 9): level 0.8 → rank ⌈0.8 · 10⌉ = 8 → q = 8
    assert loo_interval(0.0, np.arange(1.0, 10.0), 0.8) == (-8.0, 8.0)
    # level 0.95 needs rank ⌈0.95 · 10⌉ = 10 > 9 residuals: unbounded
    assert loo_interval(0.0, np.arange(1.0, 10.0), 0.95) == (-math.inf, math.inf)
    # jackknife+ with μ₋ᵢ(x) = 0 and R = 1..9: upper rank ⌈0.8 · 10⌉ = 8 of (1..9) → 8,
    # lower rank 10 − 8 = 2 of (−1..−9) sorted → −8
    assert jackknife_plus(np.zeros(9), np.arange(1.0, 10.0), 0.8) == (-8.0, 8.0)
    assert clip((-math.inf, 0.5), -1.0, 1.0) == (-1.0, 0.5)

"""Predict the gap from the features, and say honestly how well that works: leave-one-out.

Features are encoded once over every member of the study (observed or to be predicted; this
uses no gap, so it leaks nothing): the value itself, and also its log where all values are
positive (sharpness measures span decades), each standardised to mean 0, standard deviation 1.
Which encoding fits is one more choice made by leave-one-out, below.

The model is ridge regression with an unpenalised intercept,

    (b₀, β) = argmin Σᵢ (yᵢ − b₀ − xᵢᵀβ)² + α‖β‖²,   α = 0.1 on standardised features,

fitted on one candidate column set chosen among several (each encoded feature alone, and all
features together when there are at least 5 models per feature). Studies are small, so the choice
is made by leave-one-out, and to keep the reported error honest the choice itself is inside
the outer leave-one-out loop (nested LOO): for every held-out model i the candidate is picked
by the inner LOO error on the other n−1, refitted on them, and used to predict model i. The
outer residuals are then true out-of-sample errors of the whole procedure, and the n fold
models are what jackknife+ needs (conformal.py).

Inner LOO uses the exact shortcut for a linear smoother with hat matrix H = Z(ZᵀZ + Λ)⁻¹Zᵀ
(Z = [1, X], Λ = diag(0, α, …)):  ŷ₋ᵢ(xᵢ) = (ŷᵢ − Hᵢᵢ yᵢ) / (1 − Hᵢᵢ).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

ALPHA = 0.1
MODELS_PER_FEATURE_FOR_JOINT = 5


@dataclass(frozen=True)
class FoldModel:
    """One fitted ridge model: the columns it uses, its intercept and coefficients."""

    columns: tuple[int, ...]
    intercept: float
    coef: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        x2 = np.atleast_2d(x)
        return self.intercept + x2[:, list(self.columns)] @ self.coef


@dataclass
class LooError:
    mae: float
    rmse: float
    n: int

    @classmethod
    def of(cls, residuals: np.ndarray) -> LooError:
        r = np.asarray(residuals, dtype=float)
        return cls(mae=float(np.mean(np.abs(r))), rmse=float(np.sqrt(np.mean(r**2))), n=int(r.size))


@dataclass
class NestedFit:
    """The outcome of nested leave-one-out over candidate feature sets.

    loo_predictions[i]: the prediction for model i by the procedure run without it;
    fold_models[i]: the model it used; full_model: the procedure run on all n models."""

    candidates: list[tuple[int, ...]]
    loo_predictions: np.ndarray
    residuals: np.ndarray
    fold_models: list[FoldModel]
    full_model: FoldModel
    fold_choices: Counter = field(default_factory=Counter)

    @property
    def error(self) -> LooError:
        return LooError.of(self.residuals)

    def fold_predictions(self, x: np.ndarray) -> np.ndarray | None:
        """μ₋ᵢ(x) for every fold i, or None if x lacks a value a fold model needs."""
        x = np.asarray(x, dtype=float)
        needed = {c for m in self.fold_models for c in m.columns}
        if any(not np.isfinite(x[c]) for c in needed):
            return None
        return np.array([m.predict(x)[0] for m in self.fold_models])


def _standardise(v: np.ndarray) -> np.ndarray:
    """Mean 0, standard deviation 1 over the present values; a constant becomes zeros."""
    present = np.isfinite(v)
    if not present.any():
        return v
    mean = float(np.mean(v[present]))
    std = float(np.std(v[present]))
    if std <= 1e-12 * max(1.0, abs(mean)):
        return np.where(present, 0.0, v)
    return (v - mean) / std


def feature_columns(values: Sequence[float | None]) -> dict[str, np.ndarray]:
    """The candidate encodings of one feature, standardised, NaN where missing: "none" (the
    value itself) always, "log" too when every present value is > 0."""
    v = np.array([np.nan if x is None else float(x) for x in values], dtype=float)
    present = np.isfinite(v)
    out = {"none": _standardise(v)}
    if present.any() and np.all(v[present] > 0):
        out["log"] = _standardise(np.where(present, np.log(np.where(present, v, 1.0)), np.nan))
    return out


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float = ALPHA) -> tuple[float, np.ndarray]:
    """Ridge with an unpenalised intercept: centre, solve (XcᵀXc + αI)β = Xcᵀyc."""
    xm = x.mean(axis=0)
    ym = float(y.mean())
    xc = x - xm
    beta = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - ym))
    return ym - float(xm @ beta), beta


def loo_predictions(x: np.ndarray, y: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Exact leave-one-out predictions of ridge (module docstring), in O(n p²)."""
    n = x.shape[0]
    z = np.hstack([np.ones((n, 1)), x])
    penalty = np.diag([0.0] + [alpha] * x.shape[1])
    a_inv = np.linalg.inv(z.T @ z + penalty)
    h = np.einsum("ij,jk,ik->i", z, a_inv, z)
    fitted = z @ (a_inv @ (z.T @ y))
    denom = np.clip(1.0 - h, 1e-12, None)
    return (fitted - h * y) / denom


def constant_loo(y: np.ndarray) -> np.ndarray:
    """LOO predictions of the mean-gap predictor: the mean of the other n−1 gaps."""
    n = y.size
    return (y.sum() - y) / (n - 1)


def candidate_sets(singles: int, joint: list[int], n_models: int) -> list[tuple[int, ...]]:
    """Each column alone; the `joint` columns together when there are at least
    MODELS_PER_FEATURE_FOR_JOINT models (in a leave-one-out fold) per column."""
    sets: list[tuple[int, ...]] = [(j,) for j in range(singles)]
    if len(joint) >= 2 and n_models - 1 >= MODELS_PER_FEATURE_FOR_JOINT * len(joint):
        sets.append(tuple(joint))
    return sets


def _choose(x: np.ndarray, y: np.ndarray, candidates: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The candidate with the smallest LOO mean absolute error (first one on a tie)."""
    scores = [float(np.mean(np.abs(loo_predictions(x[:, list(c)], y) - y))) for c in candidates]
    return candidates[int(np.argmin(scores))]


def _fit(x: np.ndarray, y: np.ndarray, columns: tuple[int, ...]) -> FoldModel:
    intercept, coef = ridge_fit(x[:, list(columns)], y)
    return FoldModel(columns=columns, intercept=intercept, coef=coef)


def nested_loo(
    x: np.ndarray, y: np.ndarray, candidates: list[tuple[int, ...]] | None = None
) -> NestedFit:
    """Nested leave-one-out (module docstring). x: (n, p) finite, y: (n,), n ≥ 3."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = x.shape
    if n < 3:
        raise ValueError(f"nested leave-one-out needs at least 3 models, got {n}")
    cands = candidates or [(j,) for j in range(p)]
    preds = np.empty(n)
    folds: list[FoldModel] = []
    choices: Counter = Counter()
    for i in range(n):
        keep = np.arange(n) != i
        chosen = _choose(x[keep], y[keep], cands) if len(cands) > 1 else cands[0]
        model = _fit(x[keep], y[keep], chosen)
        preds[i] = model.predict(x[i])[0]
        folds.append(model)
        choices[chosen] += 1
    full_choice = _choose(x, y, cands) if len(cands) > 1 else cands[0]
    return NestedFit(
        candidates=cands,
        loo_predictions=preds,
        residuals=y - preds,
        fold_models=folds,
        full_model=_fit(x, y, full_choice),
        fold_choices=choices,
    )

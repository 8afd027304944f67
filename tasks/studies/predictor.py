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

Models that are not independent are left out together (leave-group-out): `groups` gives each
model a label, and a fold holds out every model with the held-out model's label (seed groups
a study declares, duplicates of one model). Its exact shortcut: with e = y − ŷ on the full
fit, the residuals of the group G predicted without it are (I − H_GG)⁻¹ e_G.
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


def _singletons(groups: np.ndarray | None, n: int) -> bool:
    return groups is None or np.unique(groups).size == n


def loo_predictions(
    x: np.ndarray, y: np.ndarray, alpha: float = ALPHA, groups: np.ndarray | None = None
) -> np.ndarray:
    """Exact leave-one-out (leave-group-out with `groups`) predictions of ridge (module
    docstring), in O(n p²) without groups."""
    n = x.shape[0]
    z = np.hstack([np.ones((n, 1)), x])
    penalty = np.diag([0.0] + [alpha] * x.shape[1])
    a_inv = np.linalg.inv(z.T @ z + penalty)
    fitted = z @ (a_inv @ (z.T @ y))
    if _singletons(groups, n):
        h = np.einsum("ij,jk,ik->i", z, a_inv, z)
        denom = np.clip(1.0 - h, 1e-12, None)
        return (fitted - h * y) / denom
    hat = z @ a_inv @ z.T
    assert groups is not None  # None is the singletons case above
    out = np.empty(n)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        block = np.eye(idx.size) - hat[np.ix_(idx, idx)]
        out[idx] = y[idx] - np.linalg.lstsq(block, y[idx] - fitted[idx], rcond=None)[0]
    return out


def constant_loo(y: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """LOO predictions of the mean-gap predictor: the mean of the other gaps (those outside
    the held-out model's group)."""
    n = y.size
    if _singletons(groups, n):
        return (y.sum() - y) / (n - 1)
    assert groups is not None  # None is the singletons case above
    out = np.empty(n)
    for g in np.unique(groups):
        held = groups == g
        out[held] = y[~held].mean() if (~held).any() else np.nan
    return out


def candidate_sets(singles: int, joint: list[int], n_models: int) -> list[tuple[int, ...]]:
    """Each column alone; the `joint` columns together when there are at least
    MODELS_PER_FEATURE_FOR_JOINT models (in a leave-one-out fold) per column."""
    sets: list[tuple[int, ...]] = [(j,) for j in range(singles)]
    if len(joint) >= 2 and n_models - 1 >= MODELS_PER_FEATURE_FOR_JOINT * len(joint):
        sets.append(tuple(joint))
    return sets


def _choose(
    x: np.ndarray,
    y: np.ndarray,
    candidates: list[tuple[int, ...]],
    groups: np.ndarray | None = None,
) -> tuple[int, ...]:
    """The candidate with the smallest LOO mean absolute error (first one on a tie)."""
    scores = [
        float(np.mean(np.abs(loo_predictions(x[:, list(c)], y, groups=groups) - y)))
        for c in candidates
    ]
    return candidates[int(np.argmin(scores))]


def _folds(n: int) -> np.ndarray:
    """(n, n − 1): row i lists the models of leave-one-out fold i."""
    return np.nonzero(~np.eye(n, dtype=bool))[1].reshape(n, n - 1)


def _choose_per_fold(
    x: np.ndarray, y: np.ndarray, candidates: list[tuple[int, ...]]
) -> list[tuple[int, ...]]:
    """_choose on every leave-one-out fold at once (each fold's inner LOO is the hat-matrix
    shortcut on its n − 1 models, batched over the folds): the choice of each fold."""
    n = x.shape[0]
    keep = _folds(n)  # (n, n−1)
    yk = y[keep]
    scores = np.empty((len(candidates), n))
    for k, cols in enumerate(candidates):
        xk = x[keep][:, :, list(cols)]  # (n, n−1, q)
        z = np.concatenate([np.ones(xk.shape[:2] + (1,)), xk], axis=2)
        penalty = np.diag([0.0] + [ALPHA] * len(cols))
        a_inv = np.linalg.inv(np.einsum("fij,fik->fjk", z, z) + penalty)
        fitted = np.einsum(
            "fij,fj->fi", z, np.einsum("fjk,fk->fj", a_inv, np.einsum("fij,fi->fj", z, yk))
        )
        h = np.einsum("fij,fjk,fik->fi", z, a_inv, z)
        loo = (fitted - h * yk) / np.clip(1.0 - h, 1e-12, None)
        scores[k] = np.mean(np.abs(loo - yk), axis=1)
    return [candidates[int(j)] for j in np.argmin(scores, axis=0)]


def _fit_per_fold(x: np.ndarray, y: np.ndarray, chosen: list[tuple[int, ...]]) -> list[FoldModel]:
    """ridge_fit on every leave-one-out fold with its chosen columns, batched over the folds
    that chose the same columns."""
    n = x.shape[0]
    keep = _folds(n)
    out: list[FoldModel | None] = [None] * n
    for cols in set(chosen):
        f = np.array([i for i in range(n) if chosen[i] == cols])
        xk = x[keep[f]][:, :, list(cols)]  # (folds, n−1, q)
        yk = y[keep[f]]
        xm = xk.mean(axis=1)
        ym = yk.mean(axis=1)
        xc = xk - xm[:, None, :]
        gram = np.einsum("fij,fik->fjk", xc, xc) + ALPHA * np.eye(len(cols))
        rhs = np.einsum("fij,fi->fj", xc, yk - ym[:, None])
        beta = np.linalg.solve(gram, rhs[..., None])[..., 0]
        intercept = ym - np.einsum("fj,fj->f", xm, beta)
        for k, i in enumerate(f):
            out[i] = FoldModel(columns=cols, intercept=float(intercept[k]), coef=beta[k])
    return out  # type: ignore[return-value]


def _fit(x: np.ndarray, y: np.ndarray, columns: tuple[int, ...]) -> FoldModel:
    intercept, coef = ridge_fit(x[:, list(columns)], y)
    return FoldModel(columns=columns, intercept=intercept, coef=coef)


def nested_loo(
    x: np.ndarray,
    y: np.ndarray,
    candidates: list[tuple[int, ...]] | None = None,
    groups: np.ndarray | None = None,
) -> NestedFit:
    """Nested leave-one-out (module docstring), leave-group-out with `groups` (a label per
    model). x: (n, p) finite, y: (n,), at least 3 models in at least 3 groups."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = x.shape
    labels = np.arange(n) if groups is None else np.asarray(groups)
    if n < 3 or np.unique(labels).size < 3:
        raise ValueError(
            f"nested leave-one-out needs at least 3 independent models, got "
            f"{np.unique(labels).size}"
        )
    cands = candidates or [(j,) for j in range(p)]
    preds = np.empty(n)
    folds: list[FoldModel | None] = [None] * n
    choices: Counter = Counter()
    singletons = np.unique(labels).size == n
    if singletons:
        chosen_all = _choose_per_fold(x, y, cands) if len(cands) > 1 else [cands[0]] * n
        folds = list(_fit_per_fold(x, y, chosen_all))
        for i, model in enumerate(folds):
            preds[i] = model.predict(x[i])[0]  # type: ignore[union-attr]
            choices[chosen_all[i]] += 1
    for g in [] if singletons else np.unique(labels):
        held = labels == g
        keep = ~held
        if len(cands) == 1:
            chosen = cands[0]
        else:
            chosen = _choose(x[keep], y[keep], cands, labels[keep])
        model = _fit(x[keep], y[keep], chosen)
        preds[held] = model.predict(x[held])
        for k in np.flatnonzero(held):
            folds[k] = model
            choices[chosen] += 1
    inner = None if singletons else labels
    full_choice = _choose(x, y, cands, inner) if len(cands) > 1 else cands[0]
    return NestedFit(
        candidates=cands,
        loo_predictions=preds,
        residuals=y - preds,
        fold_models=folds,  # type: ignore[arg-type]
        full_model=_fit(x, y, full_choice),
        fold_choices=choices,
    )

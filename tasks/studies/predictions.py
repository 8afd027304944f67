"""The gap predictors and each member's prediction with its interval.

A predictor is a nested leave-group-out ridge over the features present on every observed
model. Observed models get their leave-one-out prediction and a split conformal interval,
models without a gap the full-data prediction and the jackknife+ interval; outside the range
of the observed models the interval is widened and flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tasks.studies.conformal import clip, jackknife_plus, loo_interval
from tasks.studies.features import Feature, column_label, independent, loo_report
from tasks.studies.predictor import NestedFit, candidate_sets, nested_loo
from tasks.studies.results import MemberData, MemberPrediction, PredictorReport, Target

# The natural range of each target, used to bound intervals.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "accuracy_gap": (-1.0, 1.0),
    "loss_gap": (None, None),
}


@dataclass
class Design:
    """The encoded columns a predictor may use, one row per unit of the study."""

    features: list[Feature]
    labels: list[str]  # "name" or "log(name)", one per column
    matrix: np.ndarray  # (units, columns)
    owners: list[Feature] = field(default_factory=list)  # the feature of each column


def fit_predictor(
    feats: list[Feature], observed: list[int], y: np.ndarray, groups: np.ndarray
) -> tuple[NestedFit, Design] | None:
    """Nested leave-group-out over the features present on every observed model: each
    encoding of each alone, and all together (log where positive) when there are enough."""
    usable = [f for f in feats if all(f.raw[i] is not None for i in observed)]
    if not usable or independent(groups[observed]) < 3:
        return None
    labels: list[str] = []
    cols: list[np.ndarray] = []
    joint: list[int] = []
    owners: list[Feature] = []
    for f in usable:
        for encoding, col in f.columns.items():
            if encoding == ("log" if "log" in f.columns else "none"):
                joint.append(len(cols))
            labels.append(column_label(f.name, encoding))
            cols.append(col)
            owners.append(f)
    design = Design(usable, labels, np.column_stack(cols), owners)
    candidates = candidate_sets(len(cols), joint, independent(groups[observed]))
    return nested_loo(design.matrix[observed], y, candidates, groups[observed]), design


def predictor_report(
    fit: NestedFit, design: Design, level: float, groups: np.ndarray
) -> PredictorReport:
    def label(cols: tuple[int, ...]) -> str:
        return " + ".join(design.labels[c] for c in cols)

    return PredictorReport(
        features=[f.name for f in design.features],
        chosen=[design.labels[c] for c in fit.full_model.columns],
        fold_choices={label(k): v for k, v in fit.fold_choices.most_common()},
        loo=loo_report(fit.error, fit.residuals, groups),
        interval_coverage=loo_coverage(fit, level, groups),
    )


def _interval(iv: tuple[float, float], target: Target) -> list[float] | None:
    lo, hi = clip(iv, *RANGES[target])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return [lo, hi]


def _note(raw: tuple[float, float], residuals: int, level: float, target: Target) -> str | None:
    """Why an interval is the gap's whole range (or absent): too few residuals for the level.
    A rank ⌈level·(m+1)⌉ ≤ m needs m ≥ level / (1 − level) residuals."""
    if math.isfinite(raw[0]) and math.isfinite(raw[1]):
        return None
    need = math.ceil(level / (1 - level) - 1e-9)
    shown = "the gap's whole range" if RANGES[target] != (None, None) else "absent"
    return (
        f"a {level:g} interval needs at least {need} leave-one-out residuals, this one has "
        f"{residuals}: it is unbounded, so the interval is {shown}; add models to the study"
    )


def loo_coverage(fit: NestedFit, level: float, groups: np.ndarray | None = None) -> float | None:
    """Share of observed models inside their own leave-one-out interval (a check of the
    nominal level on this study; None when every interval is unbounded). The interval uses
    the residuals of the other groups only."""
    y = fit.loo_predictions + fit.residuals
    labels = np.arange(y.size) if groups is None else groups
    hits = []
    for k in range(y.size):
        others = fit.residuals[labels != labels[k]]
        lo, hi = loo_interval(float(fit.loo_predictions[k]), others, level)
        if math.isfinite(lo) and math.isfinite(hi):
            hits.append(lo <= y[k] <= hi)
    return float(np.mean(hits)) if hits else None


def _extrapolation(
    x: np.ndarray, fit: NestedFit, design: Design, observed: list[int]
) -> tuple[dict[str, list[float]], float]:
    """The features (among those any fold model uses) whose value lies outside the observed
    models' range, with that range; and how far the prediction moves when they are clamped
    into it (the extrapolated part, by the fold model that moves most)."""
    used = sorted({c for m in [*fit.fold_models, fit.full_model] for c in m.columns})
    seen = design.matrix[observed]
    clamped = x.copy()
    outside: dict[str, list[float]] = {}
    for c in used:
        lo, hi = float(np.min(seen[:, c])), float(np.max(seen[:, c]))
        tol = 1e-9 * max(1.0, hi - lo)
        if x[c] < lo - tol or x[c] > hi + tol:
            clamped[c] = min(max(x[c], lo), hi)
            f = design.owners[c]
            values = [float(f.raw[i]) for i in observed]  # type: ignore[arg-type]
            outside[f.name] = [min(values), max(values)]
    if not outside:
        return outside, 0.0
    shift = max(
        abs(float(m.predict(x)[0]) - float(m.predict(clamped)[0]))
        for m in [*fit.fold_models, fit.full_model]
    )
    return outside, shift


def unit_predictions(
    units: list[MemberData],
    observed: list[int],
    groups: np.ndarray,
    fit: NestedFit,
    design: Design,
    target: Target,
    level: float,
    calibrated: bool,
) -> dict[int, MemberPrediction]:
    out: dict[int, MemberPrediction] = {}
    residuals = fit.residuals
    labels = groups[observed]
    for k, i in enumerate(observed):
        others = residuals[labels != labels[k]]
        raw = loo_interval(float(fit.loo_predictions[k]), others, level)
        out[i] = MemberPrediction(
            gap=float(fit.loo_predictions[k]),
            interval=_interval(raw, target),
            level=level,
            kind="leave_one_out",
            note=_note(raw, others.size, level, target),
            calibrated=calibrated,
        )
    for i, m in enumerate(units):
        if m.state != "to_predict":
            continue
        x = design.matrix[i]
        folds = fit.fold_predictions(x)
        if folds is None:
            continue
        raw = jackknife_plus(folds, residuals, level)
        outside, shift = _extrapolation(x, fit, design, observed)
        note = _note(raw, residuals.size, level, target)
        if outside:
            raw = (raw[0] - shift, raw[1] + shift)
            ranges = "; ".join(f"{k} in [{v[0]:.4g}, {v[1]:.4g}]" for k, v in outside.items())
            warning = (
                f"extrapolation: outside the study's range ({ranges}); the interval is widened "
                f"by the extrapolated part of the prediction ({shift:.3g}) and has no coverage "
                "guarantee"
            )
            note = warning if note is None else f"{warning}; {note}"
        out[i] = MemberPrediction(
            gap=float(np.clip(fit.full_model.predict(x)[0], *_finite_range(target))),
            interval=_interval(raw, target),
            level=level,
            kind="new",
            note=note,
            calibrated=calibrated and not outside,
            extrapolation=bool(outside),
            outside_range=outside,
        )
    return out


def _finite_range(target: Target) -> tuple[float, float]:
    lo, hi = RANGES[target]
    return (-math.inf if lo is None else lo, math.inf if hi is None else hi)

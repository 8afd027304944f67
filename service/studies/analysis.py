"""One study's analysis: every measure and baseline against the observed gaps, the predictors
and each member's prediction with its interval.

    features   every numeric measure found in the members' results, and the baselines
    per feature τ-b, Ψ (+ per hyperparameter), CMI on the raw values (all rank- or
               sign-based, so a monotone transform changes nothing), and the LOO error of a
               ridge predictor of the gap from that feature alone (value or log, chosen
               inside the loop)
    predictors nested-LOO ridge over the measures present on every observed model (the
               measure predictor), the same over the baselines, and the mean gap
    predictions from the measure predictor (the baseline one if there are no measures):
               observed models get their leave-one-out prediction and interval, models
               without a gap the full-data prediction and the jackknife+ interval
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from service.studies import baselines as bl
from service.studies.conformal import clip, jackknife_plus, loo_interval
from service.studies.members import MemberData
from service.studies.predictor import (
    LooError,
    NestedFit,
    candidate_sets,
    constant_loo,
    feature_columns,
    nested_loo,
)
from service.studies.ranking import (
    conditional_mutual_information,
    granulated_kendall,
    hyperparameter_names,
    kendall_tau_b,
)
from service.studies.schemas import (
    MIN_MODELS,
    BaselineComparison,
    ConditionalMIReport,
    FeatureReport,
    GranulatedKendall,
    HyperparameterTau,
    LooErrorReport,
    MemberPrediction,
    PredictorReport,
    StudyAnalysis,
    Target,
)
from service.studies.verdict import VerdictInputs, verdict

# The natural range of each target, used to bound intervals.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "accuracy_gap": (-1.0, 1.0),
    "loss_gap": (None, None),
}


@dataclass
class Feature:
    name: str
    kind: str
    raw: list[float | None]  # one per member of the study (all members, in order)
    columns: dict[str, np.ndarray]  # encodings ("none", "log"), standardised, NaN if missing


@dataclass
class Design:
    """The encoded columns a predictor may use, one row per member of the study."""

    features: list[Feature]
    labels: list[str]  # "name" or "log(name)", one per column
    matrix: np.ndarray  # (members, columns)


@dataclass
class Outcome:
    """The analysis, each member's prediction, and the words a job's Prediction rests on."""

    analysis: StudyAnalysis
    predictions: dict[str, MemberPrediction] = field(default_factory=dict)
    basis: str = ""
    predictor_features: list[str] = field(default_factory=list)


def _label(name: str, encoding: str) -> str:
    return f"log({name})" if encoding == "log" else name


def _loo_report(err: LooError) -> LooErrorReport:
    return LooErrorReport(mae=err.mae, rmse=err.rmse, n=err.n)


def _features(members: list[MemberData]) -> list[Feature]:
    names = sorted({k for m in members if m.state == "observed" for k in m.measures})
    out = []
    for kind, keys in (("measure", names), ("baseline", list(bl.NAMES))):
        for name in keys:
            table = "measures" if kind == "measure" else "baselines"
            raw = [
                getattr(m, table).get(name) if m.state in ("observed", "to_predict") else None
                for m in members
            ]
            out.append(Feature(name, kind, raw, feature_columns(raw)))
    return out


def _single_feature_loo(f: Feature, rows: list[int], y: np.ndarray) -> tuple[LooError, str]:
    """LOO error of predicting the gap from this feature alone, the encoding (value or log)
    chosen inside the loop; and the encoding chosen on all rows."""
    encodings = list(f.columns)
    x = np.column_stack([f.columns[e][rows] for e in encodings])
    fit = nested_loo(x, y, [(j,) for j in range(len(encodings))])
    return fit.error, encodings[fit.full_model.columns[0]]


def _report(f: Feature, members: list[MemberData], observed: list[int]) -> FeatureReport | None:
    rows = [i for i in observed if f.raw[i] is not None]
    if len(rows) < 2:
        return None
    x = [float(f.raw[i]) for i in rows]  # type: ignore[arg-type]
    y = [float(members[i].gap) for i in rows]  # type: ignore[arg-type]
    hps = [members[i].hyperparameters for i in rows]
    g = granulated_kendall(x, y, hps)
    c = conditional_mutual_information(x, y, hps)
    loo, encoding = None, "none"
    if len(rows) >= 3:
        err, encoding = _single_feature_loo(f, rows, np.array(y))
        loo = _loo_report(err)
    return FeatureReport(
        name=f.name,
        kind=f.kind,  # type: ignore[arg-type]
        n=len(rows),
        transform=encoding,  # type: ignore[arg-type]
        kendall_tau=kendall_tau_b(x, y),
        granulated=GranulatedKendall(
            psi=g.psi,
            per_hyperparameter={
                k: HyperparameterTau(tau=v.tau, groups=v.groups)
                for k, v in g.per_hyperparameter.items()
            },
        ),
        cmi=ConditionalMIReport(value=c.value, conditioning=c.conditioning),
        loo=loo,
    )


def _predictor(
    feats: list[Feature], observed: list[int], y: np.ndarray
) -> tuple[NestedFit, Design] | None:
    """Nested LOO over the features present on every observed model: each encoding of each
    alone, and all together (log where positive) when there are enough models."""
    usable = [f for f in feats if all(f.raw[i] is not None for i in observed)]
    if not usable:
        return None
    labels, cols, joint = [], [], []
    for f in usable:
        for encoding, col in f.columns.items():
            if encoding == ("log" if "log" in f.columns else "none"):
                joint.append(len(cols))
            labels.append(_label(f.name, encoding))
            cols.append(col)
    design = Design(usable, labels, np.column_stack(cols))
    candidates = candidate_sets(len(cols), joint, len(observed))
    return nested_loo(design.matrix[observed], y, candidates), design


def _predictor_report(fit: NestedFit, design: Design, level: float) -> PredictorReport:
    def label(cols: tuple[int, ...]) -> str:
        return " + ".join(design.labels[c] for c in cols)

    return PredictorReport(
        features=[f.name for f in design.features],
        chosen=[design.labels[c] for c in fit.full_model.columns],
        fold_choices={label(k): v for k, v in fit.fold_choices.most_common()},
        loo=_loo_report(fit.error),
        interval_coverage=loo_coverage(fit, level),
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


def loo_coverage(fit: NestedFit, level: float) -> float | None:
    """Share of observed models inside their own leave-one-out interval (a check of the
    nominal level on this study; None when every interval is unbounded)."""
    y = fit.loo_predictions + fit.residuals
    hits = []
    for k in range(y.size):
        lo, hi = loo_interval(float(fit.loo_predictions[k]), np.delete(fit.residuals, k), level)
        if math.isfinite(lo) and math.isfinite(hi):
            hits.append(lo <= y[k] <= hi)
    return float(np.mean(hits)) if hits else None


def _member_predictions(
    members: list[MemberData],
    observed: list[int],
    fit: NestedFit,
    design: Design,
    target: Target,
    level: float,
) -> dict[str, MemberPrediction]:
    out: dict[str, MemberPrediction] = {}
    residuals = fit.residuals
    for k, i in enumerate(observed):
        others = np.delete(residuals, k)
        raw = loo_interval(float(fit.loo_predictions[k]), others, level)
        out[members[i].job] = MemberPrediction(
            gap=float(fit.loo_predictions[k]),
            interval=_interval(raw, target),
            level=level,
            kind="leave_one_out",
            note=_note(raw, others.size, level, target),
        )
    for i, m in enumerate(members):
        if m.state != "to_predict":
            continue
        x = design.matrix[i]
        folds = fit.fold_predictions(x)
        if folds is None:
            continue
        raw = jackknife_plus(folds, residuals, level)
        out[m.job] = MemberPrediction(
            gap=float(np.clip(fit.full_model.predict(x)[0], *_finite_range(target))),
            interval=_interval(raw, target),
            level=level,
            kind="new",
            note=_note(raw, residuals.size, level, target),
        )
    return out


def _finite_range(target: Target) -> tuple[float, float]:
    lo, hi = RANGES[target]
    return (-math.inf if lo is None else lo, math.inf if hi is None else hi)


def _best(reports: list[FeatureReport]) -> FeatureReport | None:
    ranked = [r for r in reports if r.kendall_tau is not None]
    if not ranked:
        return None
    return max(
        ranked, key=lambda r: (abs(r.kendall_tau or 0.0), -(r.loo.mae if r.loo else math.inf))
    )


def _basis(
    fit: NestedFit, design: Design, kind: str, n: int, constant: LooError, rival: LooError | None
) -> str:
    chosen = " + ".join(design.labels[c] for c in fit.full_model.columns)
    what = "measure" if kind == "measure" else "hyperparameter baseline (no measure was usable)"
    text = (
        f"ridge regression of the gap on the {what} {chosen}, calibrated on {n} models of the "
        f"study; leave-one-out MAE {fit.error.mae:.3g} (predicting the mean gap: "
        f"{constant.mae:.3g}"
    )
    if rival is not None:
        text += f"; from the baselines: {rival.mae:.3g}"
    text += ")"
    if fit.error.mae >= constant.mae:
        text += "; it does no better than predicting the mean gap"
    return text


def analyse(members: list[MemberData], target: Target, level: float) -> Outcome | None:
    """The study's analysis, or None with fewer than MIN_MODELS observed models."""
    observed = [i for i, m in enumerate(members) if m.state == "observed"]
    n = len(observed)
    if n < MIN_MODELS:
        return None
    y = np.array([members[i].gap for i in observed], dtype=float)
    feats = _features(members)
    reports = {f.name: _report(f, members, observed) for f in feats}
    measure_reports = [r for r in reports.values() if r is not None and r.kind == "measure"]
    baseline_reports = [r for r in reports.values() if r is not None and r.kind == "baseline"]

    measure_fit = _predictor([f for f in feats if f.kind == "measure"], observed, y)
    baseline_fit = _predictor([f for f in feats if f.kind == "baseline"], observed, y)
    constant = LooError.of(y - constant_loo(y))

    used = measure_fit or baseline_fit
    used_kind = "measure" if measure_fit else "baseline"
    predictions = (
        _member_predictions(members, observed, used[0], used[1], target, level) if used else {}
    )

    best_m, best_b = _best(measure_reports), _best(baseline_reports)
    by_tau = None
    if best_m is not None and best_b is not None:
        by_tau = abs(best_m.kendall_tau or 0.0) > abs(best_b.kendall_tau or 0.0)
    by_loo = None
    if measure_fit is not None:
        rivals = [constant.mae] + ([baseline_fit[0].error.mae] if baseline_fit else [])
        by_loo = measure_fit[0].error.mae < min(rivals)

    words = verdict(
        VerdictInputs(
            n=n,
            target=target,
            best_measure=best_m,
            best_baseline=best_b,
            measure_loo=_loo_report(measure_fit[0].error) if measure_fit else None,
            baseline_loo=_loo_report(baseline_fit[0].error) if baseline_fit else None,
            constant_loo=_loo_report(constant),
            by_tau=by_tau,
            by_loo=by_loo,
            has_measures=bool(measure_reports),
        )
    )
    analysis = StudyAnalysis(
        n_models=n,
        hyperparameters=hyperparameter_names([members[i].hyperparameters for i in observed]),
        measures=sorted(measure_reports, key=lambda r: -abs(r.kendall_tau or 0.0)),
        baselines=baseline_reports,
        predictor=_predictor_report(*measure_fit, level) if measure_fit else None,
        baseline_predictor=_predictor_report(*baseline_fit, level) if baseline_fit else None,
        constant_predictor=_loo_report(constant),
        best_measure=best_m.name if best_m else None,
        beats_baselines=BaselineComparison(by_tau=by_tau, by_loo=by_loo),
        verdict=words,
    )
    basis = ""
    if used is not None:
        rival = baseline_fit[0].error if (measure_fit and baseline_fit) else None
        basis = _basis(used[0], used[1], used_kind, n, constant, rival)
    return Outcome(
        analysis=analysis,
        predictions=predictions,
        basis=basis,
        predictor_features=[used[1].labels[c] for c in used[0].full_model.columns] if used else [],
    )

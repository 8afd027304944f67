"""One study's analysis: every measure and baseline against the observed gaps, the tests that
say whether a measure's ranking is more than chance and more than a baseline's, the
predictors, and each member's prediction with its interval.

    units      member jobs on one uploaded model are one model (their values averaged), so a
               duplicate neither counts twice nor sits in its own leave-one-out training fold;
               models declared in one `group` (seeds) are held out and resampled together
    features   every numeric measure found in the members' results, and the baselines
    per feature τ-b, Ψ (+ per hyperparameter), CMI on the raw values (all rank- or
               sign-based, so a monotone transform changes nothing), permutation p-values
               of τ and Ψ, a bootstrap interval of τ, and the LOO error of a ridge predictor
               of the gap from that feature alone (value or log, chosen inside the loop)
    beating    a measure beats the baselines only when its τ is significant and its |τ|
               exceeds the best baseline's significantly, both after Holm's correction
               across the measures, and the measure predictor's LOO error is below both the
               baseline predictor's and the mean gap's by more than a standard error
    predictors nested leave-group-out ridge over the measures present on every observed model
               (the measure predictor), the same over the baselines, and the mean gap
    predictions from the measure predictor (the baseline one if there are no measures):
               observed models get their leave-one-out prediction and interval, models
               without a gap the full-data prediction and the jackknife+ interval; outside
               the range of the observed models the interval is widened and flagged; no
               prediction is calibrated when the predictor loses to the mean gap
    noise      with the test-set sizes known, the accuracy gaps' spread is compared with the
               binomial noise of the test sets
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from service.studies import baselines as bl
from service.studies import significance as sig
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
    LooMargin,
    MemberPrediction,
    NoiseFloor,
    PredictorReport,
    Significance,
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
    raw: list[float | None]  # one per unit of the study (all units, in order)
    columns: dict[str, np.ndarray]  # encodings ("none", "log"), standardised, NaN if missing


@dataclass
class Design:
    """The encoded columns a predictor may use, one row per unit of the study."""

    features: list[Feature]
    labels: list[str]  # "name" or "log(name)", one per column
    matrix: np.ndarray  # (units, columns)
    owners: list[Feature] = field(default_factory=list)  # the feature of each column


@dataclass
class Units:
    """The study's models: member jobs on one uploaded model merged into one unit."""

    units: list[MemberData]
    of_member: dict[int, int]  # member index → unit index
    members_of: list[list[int]]  # unit index → member indices
    groups: np.ndarray  # unit index → label of the group held out together
    duplicates: list[list[str]]
    warnings: list[str]


@dataclass
class Outcome:
    """The analysis, each member's prediction, and the words a job's Prediction rests on."""

    analysis: StudyAnalysis
    predictions: dict[str, MemberPrediction] = field(default_factory=dict)
    basis: str = ""
    predictor_features: list[str] = field(default_factory=list)
    mean_gap: float | None = None


def _label(name: str, encoding: str) -> str:
    return f"log({name})" if encoding == "log" else name


def _loo_report(err: LooError, residuals: np.ndarray, groups: np.ndarray) -> LooErrorReport:
    se = sig.loo_se(residuals, groups)
    return LooErrorReport(mae=err.mae, rmse=err.rmse, n=err.n, se=se if math.isfinite(se) else None)


# ------------------------------------------------------------------------------ units
def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _merge(group: list[MemberData]) -> MemberData:
    """One unit from the member jobs on one model: the mean of each value they carry."""
    first = group[0]
    if len(group) == 1:
        return first
    observed = [m for m in group if m.state == "observed"]
    names = {k for m in group for k in m.measures}
    bnames = {k for m in group for k in m.baselines}
    ses = [m.noise_se for m in observed if m.noise_se is not None]
    sizes = [m.test_examples for m in observed if m.test_examples is not None]
    return replace(
        first,
        state="observed" if observed else first.state,
        gap=_mean([m.gap for m in observed if m.gap is not None]),
        gap_source=observed[0].gap_source if observed else first.gap_source,
        measures={
            k: v
            for k in names
            if (v := _mean([m.measures[k] for m in group if k in m.measures])) is not None
        },
        baselines={
            k: _mean([v for m in group if (v := m.baselines.get(k)) is not None]) for k in bnames
        },
        group=next((m.group for m in group if m.group is not None), None),
        noise_se=max(ses) if ses else None,
        test_examples=min(sizes) if sizes else None,
    )


def _units(members: list[MemberData]) -> Units:
    """Merge the succeeded member jobs by model id; group the units by declared group (two
    groups that share a model become one)."""
    keys: dict[object, list[int]] = {}
    for i, m in enumerate(members):
        if m.state not in ("observed", "to_predict"):
            continue
        keys.setdefault(m.model if m.model is not None else ("job", i), []).append(i)
    units, members_of, of_member, duplicates, warnings = [], [], {}, [], []
    for idx in keys.values():
        group = [members[i] for i in idx]
        if len(idx) > 1:
            duplicates.append([m.job for m in group])
            if any(m.hyperparameters != group[0].hyperparameters for m in group):
                warnings.append(
                    f"jobs {', '.join(m.job for m in group)} are on the same model but declare "
                    f"different hyperparameters; those of {group[0].job} are used"
                )
        for i in idx:
            of_member[i] = len(units)
        members_of.append(idx)
        units.append(_merge(group))
    # union-find over units: one declared group label, or one model, is one held-out group
    parent = list(range(len(units)))

    def find(u: int) -> int:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    seen: dict[str, int] = {}
    for u, idx in enumerate(members_of):
        for i in idx:
            label = members[i].group
            if label is None:
                continue
            if label in seen:
                parent[find(u)] = find(seen[label])
            else:
                seen[label] = u
    groups = np.array([find(u) for u in range(len(units))], dtype=int)
    return Units(units, of_member, members_of, groups, duplicates, warnings)


# --------------------------------------------------------------------------- features
def _features(units: list[MemberData]) -> list[Feature]:
    names = sorted({k for m in units if m.state == "observed" for k in m.measures})
    out = []
    for kind, keys in (("measure", names), ("baseline", list(bl.NAMES))):
        for name in keys:
            table = "measures" if kind == "measure" else "baselines"
            raw = [
                getattr(m, table).get(name) if m.state in ("observed", "to_predict") else None
                for m in units
            ]
            out.append(Feature(name, kind, raw, feature_columns(raw)))
    return out


def _independent(groups: np.ndarray) -> int:
    return int(np.unique(groups).size)


def _single_feature_loo(
    f: Feature, rows: list[int], y: np.ndarray, groups: np.ndarray
) -> tuple[LooErrorReport, str]:
    """LOO error of predicting the gap from this feature alone, the encoding (value or log)
    chosen inside the loop; and the encoding chosen on all rows."""
    encodings = list(f.columns)
    x = np.column_stack([f.columns[e][rows] for e in encodings])
    fit = nested_loo(x, y, [(j,) for j in range(len(encodings))], groups)
    return _loo_report(fit.error, fit.residuals, groups), encodings[fit.full_model.columns[0]]


def _report(
    f: Feature, units: list[MemberData], observed: list[int], groups: np.ndarray
) -> FeatureReport | None:
    rows = [i for i in observed if f.raw[i] is not None]
    if len(rows) < 2:
        return None
    x = [float(f.raw[i]) for i in rows]  # type: ignore[arg-type]
    y = [float(units[i].gap) for i in rows]  # type: ignore[arg-type]
    hps = [units[i].hyperparameters for i in rows]
    g = granulated_kendall(x, y, hps)
    c = conditional_mutual_information(x, y, hps)
    loo, encoding = None, "none"
    if _independent(groups[rows]) >= 3:
        loo, encoding = _single_feature_loo(f, rows, np.array(y), groups[rows])
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


# ------------------------------------------------------------------------ significance
def _significance(
    feats: list[Feature],
    reports: dict[str, FeatureReport | None],
    units: list[MemberData],
    observed: list[int],
    groups: np.ndarray,
) -> None:
    """Fill each report's `significance` (module docstring of significance.py)."""
    ranked = [f for f in feats if (r := reports[f.name]) is not None and r.kendall_tau is not None]
    if not ranked:
        return
    y = np.array([units[i].gap for i in observed], dtype=float)
    hps = [units[i].hyperparameters for i in observed]
    raw = np.array(
        [[np.nan if f.raw[i] is None else float(f.raw[i]) for f in ranked] for i in observed]
    )
    # permutations: features present on the same models share one pass
    tests: dict[str, tuple[float | None, float | None, str, int]] = {}
    masks: dict[tuple[bool, ...], list[int]] = {}
    for j in range(len(ranked)):
        masks.setdefault(tuple(np.isfinite(raw[:, j])), []).append(j)
    for mask, cols in masks.items():
        rows = np.flatnonzero(mask)
        if rows.size < 3:
            continue
        reps = [reports[ranked[j].name] for j in cols]
        t = sig.permutation_test(
            raw[np.ix_(rows, cols)],
            y[rows],
            [hps[r] for r in rows],
            [r.kendall_tau for r in reps],  # type: ignore[union-attr]
            [r.granulated.psi for r in reps],  # type: ignore[union-attr]
        )
        for k, j in enumerate(cols):
            tests[ranked[j].name] = (t.p_tau[k], t.p_psi[k], t.method, t.permutations)
    boot = sig.bootstrap_taus(raw, y, sig.bootstrap_weights(groups[observed]))
    base_cols = [j for j, f in enumerate(ranked) if f.kind == "baseline"]
    measures = [j for j, f in enumerate(ranked) if f.kind == "measure"]
    # the best baseline is chosen once, on all the models, not again in each resample
    # (the baseline the verdict names: largest |τ|, ties to the smaller LOO error)
    chosen = _best([reports[ranked[j].name] for j in base_cols])  # type: ignore[misc]
    vs: dict[int, float | None] = {j: None for j in measures}
    vs_name = chosen.name if chosen is not None else None
    if chosen is not None:
        b = next(j for j in base_cols if ranked[j].name == chosen.name)
        tau_b = float(reports[ranked[b].name].kendall_tau)  # type: ignore[union-attr,arg-type]
        for j in measures:
            tau_m = float(reports[ranked[j].name].kendall_tau)  # type: ignore[union-attr,arg-type]
            vs[j] = sig.beats_baseline_p(boot[:, j], boot[:, b], tau_m, tau_b)

    def p_of(j: int, k: int) -> float | None:
        return tests.get(ranked[j].name, (None, None, "", 0))[k]  # type: ignore[return-value]

    tau_adj = sig.holm([p_of(j, 0) for j in measures])
    psi_adj = sig.holm([p_of(j, 1) for j in measures])
    beats_raw = [
        max(p_of(j, 0), vs[j]) if p_of(j, 0) is not None and vs[j] is not None else None
        for j in measures
    ]
    beats_adj = sig.holm(beats_raw)
    adjusted = {j: (tau_adj[k], psi_adj[k], beats_adj[k]) for k, j in enumerate(measures)}
    for j, f in enumerate(ranked):
        if f.name not in tests:
            continue
        p_tau, p_psi, method, m = tests[f.name]
        a_tau, a_psi, a_beats = adjusted.get(j, (None, None, None))
        reports[f.name].significance = Significance(  # type: ignore[union-attr]
            method=method,  # type: ignore[arg-type]
            permutations=m,
            tau_p=p_tau,
            tau_p_adjusted=a_tau,
            psi_p=p_psi,
            psi_p_adjusted=a_psi,
            tau_interval=sig.percentile_interval(boot[:, j]),
            vs_best_baseline_p=vs.get(j),
            vs_baseline=vs_name if vs.get(j) is not None else None,
            beats_p=a_beats,
        )


# ------------------------------------------------------------------------- predictors
def _predictor(
    feats: list[Feature], observed: list[int], y: np.ndarray, groups: np.ndarray
) -> tuple[NestedFit, Design] | None:
    """Nested leave-group-out over the features present on every observed model: each
    encoding of each alone, and all together (log where positive) when there are enough."""
    usable = [f for f in feats if all(f.raw[i] is not None for i in observed)]
    if not usable or _independent(groups[observed]) < 3:
        return None
    labels, cols, joint, owners = [], [], [], []
    for f in usable:
        for encoding, col in f.columns.items():
            if encoding == ("log" if "log" in f.columns else "none"):
                joint.append(len(cols))
            labels.append(_label(f.name, encoding))
            cols.append(col)
            owners.append(f)
    design = Design(usable, labels, np.column_stack(cols), owners)
    candidates = candidate_sets(len(cols), joint, _independent(groups[observed]))
    return nested_loo(design.matrix[observed], y, candidates, groups[observed]), design


def _predictor_report(
    fit: NestedFit, design: Design, level: float, groups: np.ndarray
) -> PredictorReport:
    def label(cols: tuple[int, ...]) -> str:
        return " + ".join(design.labels[c] for c in cols)

    return PredictorReport(
        features=[f.name for f in design.features],
        chosen=[design.labels[c] for c in fit.full_model.columns],
        fold_choices={label(k): v for k, v in fit.fold_choices.most_common()},
        loo=_loo_report(fit.error, fit.residuals, groups),
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


def _unit_predictions(
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


def _best(reports: list[FeatureReport]) -> FeatureReport | None:
    ranked = [r for r in reports if r.kendall_tau is not None]
    if not ranked:
        return None
    return max(
        ranked, key=lambda r: (abs(r.kendall_tau or 0.0), -(r.loo.mae if r.loo else math.inf))
    )


def _basis(
    fit: NestedFit,
    design: Design,
    kind: str,
    n: int,
    constant: LooError,
    rival: LooError | None,
    vs_mean: LooMargin | None = None,
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
    if vs_mean is not None and vs_mean.p is not None and vs_mean.p > sig.ALPHA:
        text += (
            "; it is not significantly more accurate than predicting the mean gap (one-sided "
            f"paired p = {vs_mean.p:.3g} > {sig.ALPHA:g})"
        )
    return text


def _noise_floor(units: list[MemberData], observed: list[int]) -> NoiseFloor | None:
    """The gaps' spread against the binomial noise of the test sets (members.py): with all
    true gaps equal, Σ (gᵢ − ḡ_w)²/seᵢ² is χ² with k − 1 degrees of freedom (ḡ_w the
    inverse-variance weighted mean). A test accuracy of exactly 0 or 1 gets se = 1/n."""
    rows = [
        i for i in observed if units[i].noise_se is not None and units[i].test_examples is not None
    ]
    if len(rows) < 3:
        return None
    g = np.array([units[i].gap for i in rows], dtype=float)
    n = np.array([units[i].test_examples for i in rows], dtype=float)
    se = np.maximum(np.array([units[i].noise_se for i in rows], dtype=float), 1.0 / n)
    w = 1.0 / se**2
    centre = float(np.sum(w * g) / np.sum(w))
    stat = float(np.sum(w * (g - centre) ** 2))
    critical = sig.chi2_upper(len(rows) - 1)
    return NoiseFloor(
        models=len(rows),
        min_test_examples=int(n.min()),
        max_test_examples=int(n.max()),
        noise_sd=float(np.sqrt(np.mean(se**2))),
        gap_sd=float(np.std(g, ddof=1)),
        statistic=stat,
        critical=critical,
        within=stat <= critical,
    )


def _margin(rival: np.ndarray, mine: np.ndarray, groups: np.ndarray) -> LooMargin:
    diff, se = sig.paired_margin(rival, mine, groups)
    return LooMargin(
        difference=diff,
        se=se if math.isfinite(se) else float("inf"),
        p=sig.paired_improvement_p(rival, mine, groups),
    )


def analyse(members: list[MemberData], target: Target, level: float) -> Outcome | None:
    """The study's analysis, or None with fewer than MIN_MODELS observed models."""
    u = _units(members)
    units, groups = u.units, u.groups
    observed = [i for i, m in enumerate(units) if m.state == "observed"]
    n = len(observed)
    if n < MIN_MODELS:
        return None
    y = np.array([units[i].gap for i in observed], dtype=float)
    g_obs = groups[observed]
    feats = _features(units)
    reports = {f.name: _report(f, units, observed, groups) for f in feats}
    _significance(feats, reports, units, observed, groups)
    measure_reports = [r for r in reports.values() if r is not None and r.kind == "measure"]
    baseline_reports = [r for r in reports.values() if r is not None and r.kind == "baseline"]

    measure_fit = _predictor([f for f in feats if f.kind == "measure"], observed, y, groups)
    baseline_fit = _predictor([f for f in feats if f.kind == "baseline"], observed, y, groups)
    constant_resid = y - constant_loo(y, g_obs)
    constant = LooError.of(constant_resid)

    used = measure_fit or baseline_fit
    used_kind = "measure" if measure_fit else "baseline"
    # calibrated only when the predictor beats the mean gap significantly, not by luck
    vs_mean = _margin(constant_resid, used[0].residuals, g_obs) if used else None
    beats_mean = bool(vs_mean.p is not None and vs_mean.p <= sig.ALPHA) if vs_mean else None
    unit_preds = (
        _unit_predictions(
            units, observed, groups, used[0], used[1], target, level, bool(beats_mean)
        )
        if used
        else {}
    )
    predictions = {members[i].job: unit_preds[k] for i, k in u.of_member.items() if k in unit_preds}

    best_m, best_b = _best(measure_reports), _best(baseline_reports)
    tested = [r for r in measure_reports if r.significance and r.significance.beats_p is not None]
    strongest = min(tested, key=lambda r: r.significance.beats_p) if tested else None  # type: ignore[union-attr,return-value]
    by_tau = None
    if best_m is not None and best_b is not None:
        by_tau = strongest is not None and strongest.significance.beats_p <= sig.ALPHA  # type: ignore[union-attr,operator]
    by_loo, vs_constant, vs_baselines = None, None, None
    if measure_fit is not None:
        mine = measure_fit[0].residuals
        vs_constant = _margin(constant_resid, mine, g_obs)
        margins = [vs_constant]
        if baseline_fit is not None:
            vs_baselines = _margin(baseline_fit[0].residuals, mine, g_obs)
            margins.append(vs_baselines)
        by_loo = all(mg.difference > mg.se for mg in margins)
    comparison = BaselineComparison(
        beats=bool(by_tau) and bool(by_loo),
        by_tau=by_tau,
        by_loo=by_loo,
        measure=strongest.name if strongest else None,
        p_value=strongest.significance.beats_p if strongest else None,  # type: ignore[union-attr]
        alpha=sig.ALPHA,
        vs_constant=vs_constant,
        vs_baselines=vs_baselines,
    )
    floor = _noise_floor(units, observed) if target == "accuracy_gap" else None
    extrapolated = sorted({k for p in unit_preds.values() for k in p.outside_range})
    n_extrapolated = sum(p.extrapolation for p in unit_preds.values())

    words = verdict(
        VerdictInputs(
            n=n,
            target=target,
            best_measure=best_m,
            best_baseline=best_b,
            strongest=strongest,
            measure_loo=_loo_report(measure_fit[0].error, measure_fit[0].residuals, g_obs)
            if measure_fit
            else None,
            baseline_loo=_loo_report(baseline_fit[0].error, baseline_fit[0].residuals, g_obs)
            if baseline_fit
            else None,
            constant_loo=_loo_report(constant, constant_resid, g_obs),
            comparison=comparison,
            has_measures=bool(measure_reports),
            measures_tested=len(tested),
            predictor_beats_mean_gap=beats_mean,
            predictor_kind=used_kind if used else None,
            noise_floor=floor,
            duplicates=u.duplicates,
            groups=_independent(g_obs),
            extrapolated=n_extrapolated,
            extrapolated_features=extrapolated,
        )
    )
    analysis = StudyAnalysis(
        n_models=n,
        n_members=sum(len(u.members_of[i]) for i in observed),
        groups=_independent(g_obs),
        duplicates=u.duplicates,
        hyperparameters=hyperparameter_names([units[i].hyperparameters for i in observed]),
        measures=sorted(measure_reports, key=lambda r: -abs(r.kendall_tau or 0.0)),
        baselines=baseline_reports,
        predictor=_predictor_report(*measure_fit, level, g_obs) if measure_fit else None,
        baseline_predictor=_predictor_report(*baseline_fit, level, g_obs) if baseline_fit else None,
        constant_predictor=_loo_report(constant, constant_resid, g_obs),
        best_measure=best_m.name if best_m else None,
        beats_baselines=comparison,
        predictor_beats_mean_gap=beats_mean,
        predictor_vs_mean_gap=vs_mean,
        noise_floor=floor,
        warnings=u.warnings,
        verdict=words,
    )
    basis = ""
    if used is not None:
        rival = baseline_fit[0].error if (measure_fit and baseline_fit) else None
        basis = _basis(used[0], used[1], used_kind, n, constant, rival, vs_mean)
    return Outcome(
        analysis=analysis,
        predictions=predictions,
        basis=basis,
        predictor_features=[used[1].labels[c] for c in used[0].full_model.columns] if used else [],
        mean_gap=float(np.mean(y)),
    )

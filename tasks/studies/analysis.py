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
from dataclasses import dataclass, field

import numpy as np

from tasks.studies import significance as sig
from tasks.studies.feature_tests import fill_significance
from tasks.studies.features import (
    Feature,
    best,
    feature_report,
    independent,
    loo_report,
    study_features,
)
from tasks.studies.predictions import Design, fit_predictor, predictor_report, unit_predictions
from tasks.studies.predictor import LooError, NestedFit, constant_loo
from tasks.studies.ranking import hyperparameter_names
from tasks.studies.results import (
    MIN_MODELS,
    BaselineComparison,
    FeatureReport,
    LooErrorReport,
    LooMargin,
    MemberData,
    MemberPrediction,
    NoiseFloor,
    StudyAnalysis,
    Target,
)
from tasks.studies.units import Units, merge_units
from tasks.studies.verdict import VerdictInputs, verdict


@dataclass
class Outcome:
    """The analysis, each member's prediction, and the words a job's Prediction rests on."""

    analysis: StudyAnalysis
    predictions: dict[str, MemberPrediction] = field(default_factory=dict)
    basis: str = ""
    predictor_features: list[str] = field(default_factory=list)
    mean_gap: float | None = None


@dataclass
class Fits:
    """The study's three predictors of the gap, fitted on the observed models."""

    measure: tuple[NestedFit, Design] | None
    baseline: tuple[NestedFit, Design] | None
    constant: LooError
    constant_resid: np.ndarray
    groups: np.ndarray  # of the observed models

    @property
    def used(self) -> tuple[NestedFit, Design] | None:
        """The one the predictions come from: the measure predictor, else the baseline one."""
        return self.measure or self.baseline

    @property
    def used_kind(self) -> str:
        return "measure" if self.measure else "baseline"

    def loo(self, fit: tuple[NestedFit, Design] | None) -> LooErrorReport | None:
        return loo_report(fit[0].error, fit[0].residuals, self.groups) if fit else None

    def constant_loo(self) -> LooErrorReport:
        return loo_report(self.constant, self.constant_resid, self.groups)


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


def _comparison(
    measure_reports: list[FeatureReport], baseline_reports: list[FeatureReport], fits: Fits
) -> tuple[BaselineComparison, FeatureReport | None, int]:
    """Whether a measure beats the baselines (by τ and by LOO error), the measure with the
    smallest beats_p, and how many measures were tested."""
    tested = [r for r in measure_reports if r.significance and r.significance.beats_p is not None]
    strongest = min(tested, key=_beats_p) if tested else None
    by_tau = None
    if best(measure_reports) is not None and best(baseline_reports) is not None:
        by_tau = strongest is not None and strongest.significance.beats_p <= sig.ALPHA  # type: ignore[union-attr,operator]
    by_loo, vs_constant, vs_baselines = None, None, None
    if fits.measure is not None:
        mine = fits.measure[0].residuals
        vs_constant = _margin(fits.constant_resid, mine, fits.groups)
        margins = [vs_constant]
        if fits.baseline is not None:
            vs_baselines = _margin(fits.baseline[0].residuals, mine, fits.groups)
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
    return comparison, strongest, len(tested)


def _fits(feats: list[Feature], observed: list[int], y: np.ndarray, groups: np.ndarray) -> Fits:
    g_obs = groups[observed]
    constant_resid = y - constant_loo(y, g_obs)
    return Fits(
        measure=fit_predictor([f for f in feats if f.kind == "measure"], observed, y, groups),
        baseline=fit_predictor([f for f in feats if f.kind == "baseline"], observed, y, groups),
        constant=LooError.of(constant_resid),
        constant_resid=constant_resid,
        groups=g_obs,
    )


def analyse(members: list[MemberData], target: Target, level: float) -> Outcome | None:
    """The study's analysis, or None with fewer than MIN_MODELS observed models."""
    u = merge_units(members)
    units, groups = u.units, u.groups
    observed = [i for i, m in enumerate(units) if m.state == "observed"]
    n = len(observed)
    if n < MIN_MODELS:
        return None
    y = np.array([units[i].gap for i in observed], dtype=float)
    feats = study_features(units)
    reports = {f.name: feature_report(f, units, observed, groups) for f in feats}
    fill_significance(feats, reports, units, observed, groups)
    measure_reports = [r for r in reports.values() if r is not None and r.kind == "measure"]
    baseline_reports = [r for r in reports.values() if r is not None and r.kind == "baseline"]
    fits = _fits(feats, observed, y, groups)
    used, g_obs = fits.used, fits.groups
    # calibrated only when the predictor beats the mean gap significantly, not by luck
    vs_mean = _margin(fits.constant_resid, used[0].residuals, g_obs) if used else None
    beats_mean = bool(vs_mean.p is not None and vs_mean.p <= sig.ALPHA) if vs_mean else None
    unit_preds = (
        unit_predictions(units, observed, groups, *used, target, level, bool(beats_mean))
        if used
        else {}
    )
    comparison, strongest, tested = _comparison(measure_reports, baseline_reports, fits)
    floor = _noise_floor(units, observed) if target == "accuracy_gap" else None
    words = verdict(
        VerdictInputs(
            n=n,
            target=target,
            best_measure=best(measure_reports),
            best_baseline=best(baseline_reports),
            strongest=strongest,
            measure_loo=fits.loo(fits.measure),
            baseline_loo=fits.loo(fits.baseline),
            constant_loo=fits.constant_loo(),
            comparison=comparison,
            has_measures=bool(measure_reports),
            measures_tested=tested,
            predictor_beats_mean_gap=beats_mean,
            predictor_kind=fits.used_kind if used else None,
            noise_floor=floor,
            duplicates=u.duplicates,
            groups=independent(g_obs),
            extrapolated=sum(p.extrapolation for p in unit_preds.values()),
            extrapolated_features=sorted({k for p in unit_preds.values() for k in p.outside_range}),
        )
    )
    analysis = StudyAnalysis(
        n_models=n,
        n_members=sum(len(u.members_of[i]) for i in observed),
        groups=independent(g_obs),
        duplicates=u.duplicates,
        hyperparameters=hyperparameter_names([units[i].hyperparameters for i in observed]),
        measures=sorted(measure_reports, key=lambda r: -abs(r.kendall_tau or 0.0)),
        baselines=baseline_reports,
        predictor=predictor_report(*fits.measure, level, g_obs) if fits.measure else None,
        baseline_predictor=predictor_report(*fits.baseline, level, g_obs)
        if fits.baseline
        else None,
        constant_predictor=fits.constant_loo(),
        best_measure=_name(best(measure_reports)),
        beats_baselines=comparison,
        predictor_beats_mean_gap=beats_mean,
        predictor_vs_mean_gap=vs_mean,
        noise_floor=floor,
        warnings=u.warnings,
        verdict=words,
    )
    return _outcome(analysis, u, members, unit_preds, fits, n, vs_mean, float(np.mean(y)))


def _beats_p(report: FeatureReport) -> float:
    """The Holm-adjusted beats_p of a tested measure."""
    assert report.significance is not None and report.significance.beats_p is not None
    return report.significance.beats_p


def _name(report: FeatureReport | None) -> str | None:
    return report.name if report else None


def _outcome(
    analysis: StudyAnalysis,
    u: Units,
    members: list[MemberData],
    unit_preds: dict[int, MemberPrediction],
    fits: Fits,
    n: int,
    vs_mean: LooMargin | None,
    mean_gap: float,
) -> Outcome:
    """The analysis with each member job's prediction (its unit's) and the predictor's basis."""
    used = fits.used
    basis = ""
    if used is not None:
        rival = fits.baseline[0].error if (fits.measure and fits.baseline) else None
        basis = _basis(used[0], used[1], fits.used_kind, n, fits.constant, rival, vs_mean)
    return Outcome(
        analysis=analysis,
        predictions={
            members[i].job: unit_preds[k] for i, k in u.of_member.items() if k in unit_preds
        },
        basis=basis,
        predictor_features=[used[1].labels[c] for c in used[0].full_model.columns] if used else [],
        mean_gap=mean_gap,
    )

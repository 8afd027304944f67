"""The analysis in plain words: does any measure beat the trivial baselines, here, beyond
chance?

Two tests, both required before a measure is called useful in this study:
- ranking: the measure's τ is significant (permutation test) and its |τ| exceeds the best
  baseline's significantly (bootstrap), both after Holm's correction across the measures
  tried, so picking the best of many measures after the fact is paid for;
- prediction: the measure predictor's leave-one-out MAE is below both the baseline
  predictor's and the mean-gap predictor's by more than the standard error of each
  difference.
The verdict also says when the gaps' spread is within the noise of the test sets, when
jobs on one model were merged or groups held out together, when a model to predict lies
outside the study's range, and when no prediction is calibrated because the predictor does
no better than the mean gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tasks.studies.results import (
    BaselineComparison,
    FeatureReport,
    LooErrorReport,
    NoiseFloor,
)

FEW_MODELS = 10
LOW_CMI = 0.05


def tau_noise(n: int) -> float:
    """Standard deviation of Kendall's τ over n independent pairs (no ties)."""
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))) if n >= 2 else math.inf


def _t(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def _e(x: LooErrorReport | None) -> str:
    return "n/a" if x is None else f"{x.mae:.3g}"


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


@dataclass
class VerdictInputs:
    n: int
    target: str
    best_measure: FeatureReport | None
    best_baseline: FeatureReport | None
    measure_loo: LooErrorReport | None
    baseline_loo: LooErrorReport | None
    constant_loo: LooErrorReport
    comparison: BaselineComparison
    has_measures: bool
    strongest: FeatureReport | None = None
    measures_tested: int = 0
    predictor_beats_mean_gap: bool | None = None
    predictor_kind: str | None = None
    noise_floor: NoiseFloor | None = None
    duplicates: list[list[str]] = field(default_factory=list)
    groups: int = 0
    extrapolated: int = 0
    extrapolated_features: list[str] = field(default_factory=list)


def _stats(r: FeatureReport) -> str:
    s = r.significance
    text = f"τ = {_t(r.kendall_tau)}"
    if s is not None:
        if s.tau_interval is not None:
            text += f", 95% bootstrap interval [{s.tau_interval[0]:+.2f}, {s.tau_interval[1]:+.2f}]"
        text += f", permutation p = {_p(s.tau_p)}"
        if s.method == "exact":
            text += " (exact)"
    if r.granulated.psi is not None:
        text += f"; Ψ = {_t(r.granulated.psi)}"
        if s is not None and s.psi_p is not None:
            text += f", p = {_p(s.psi_p)}"
    return text


def _ranking_sentence(v: VerdictInputs) -> str:
    m, b, c = v.best_measure, v.best_baseline, v.comparison
    if m is None:
        return "No measure could be ranked against the gaps (no measure varies across models)."
    if b is None:
        return (
            f"The best-ranking measure is {m.name} ({_stats(m)}); no trivial baseline could be "
            "computed (give learning_rate and batch_size as hyperparameters, or add "
            "weight_norms to the jobs), so it is not compared with one."
        )
    tried = f"{v.measures_tested} measure{'s' if v.measures_tested != 1 else ''}"
    if c.by_tau and v.strongest is not None:
        s = v.strongest
        return (
            f"{s.name} ranks the gaps beyond chance and better than the best trivial baseline, "
            f"{b.name} (τ = {_t(b.kendall_tau)}): {_stats(s)}; p = {_p(c.p_value)} for beating "
            f"the baseline, after Holm's correction over the {tried} tried (α = {c.alpha:g})."
        )
    return (
        f"No measure ranks the gaps significantly better than the trivial baseline {b.name} "
        f"(τ = {_t(b.kendall_tau)}) once the {tried} tried are corrected for (Holm, α = "
        f"{c.alpha:g}; smallest adjusted p = {_p(c.p_value)}); the best measure, {m.name}, "
        f"has {_stats(m)}."
    )


def _prediction_sentence(v: VerdictInputs) -> str:
    if v.measure_loo is None:
        if 0 < v.groups < 3:
            return (
                f"The models form only {v.groups} independent groups, too few to hold one out "
                "and fit on the rest, so no predictor was fit."
            )
        return "No measure is present on every observed model, so no measure predictor was fit."
    c = v.comparison
    rivals = [f"the mean gap's {_e(v.constant_loo)}"]
    if v.baseline_loo is not None:
        rivals.insert(0, f"the baselines' {_e(v.baseline_loo)}")
    against = " and ".join(rivals)
    se = f" ± {v.measure_loo.se:.2g}" if v.measure_loo.se is not None else ""
    if c.by_loo:
        return (
            f"Predicting the gap from the measures has a leave-one-out error (MAE) of "
            f"{_e(v.measure_loo)}{se}, below {against} by more than a standard error."
        )
    margins = [mg for mg in (c.vs_baselines, c.vs_constant) if mg is not None]
    short = [mg for mg in margins if not mg.difference > mg.se]
    detail = ""
    if short:
        mg = short[0]
        detail = (
            f" (it is ahead by {mg.difference:.3g}, standard error {mg.se:.2g})"
            if mg.difference > 0
            else ""
        )
    return (
        f"Predicting the gap from the measures is not clearly more accurate than that: "
        f"leave-one-out MAE {_e(v.measure_loo)}{se} against {against}{detail}."
    )


def _calibration_sentence(v: VerdictInputs) -> str | None:
    if v.predictor_beats_mean_gap is False:
        return (
            "The predictor used for the members' predictions is not significantly more "
            "accurate than predicting the mean gap (one-sided paired test at 5%), so no "
            "prediction from this study is calibrated."
        )
    return None


def _noise_sentence(v: VerdictInputs) -> str | None:
    f = v.noise_floor
    if f is None:
        return None
    sizes = (
        f"{f.min_test_examples}"
        if f.min_test_examples == f.max_test_examples
        else f"{f.min_test_examples}–{f.max_test_examples}"
    )
    if f.within:
        return (
            f"The gaps' spread (sd {f.gap_sd:.3g}) is within the noise of the test sets "
            f"({sizes} examples: binomial sd {f.noise_sd:.3g}; χ² {f.statistic:.3g} ≤ "
            f"{f.critical:.3g}): the differences between these models' gaps may be nothing "
            "but test-set sampling noise, so no ranking of them can be trusted; use larger "
            "test sets."
        )
    return (
        f"The gaps' spread (sd {f.gap_sd:.3g}) is beyond the noise of the test sets ({sizes} "
        f"examples: binomial sd {f.noise_sd:.3g})."
    )


def _structure_sentence(v: VerdictInputs) -> str | None:
    parts = []
    if v.duplicates:
        jobs = sum(len(d) for d in v.duplicates)
        parts.append(
            f"{jobs} jobs were on {len(v.duplicates)} model(s) already in the study and were "
            "merged, each model counted once"
        )
    if v.groups and v.groups < v.n:
        parts.append(
            f"the {v.n} models form {v.groups} groups that were held out and resampled together"
        )
    if not parts:
        return None
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _extrapolation_sentence(v: VerdictInputs) -> str | None:
    if not v.extrapolated:
        return None
    what = ", ".join(v.extrapolated_features)
    return (
        f"{v.extrapolated} model(s) to predict lie outside the study's range of {what}: their "
        "predictions are extrapolations, with widened intervals that carry no coverage "
        "guarantee, and are not calibrated."
    )


def verdict(v: VerdictInputs) -> str:
    if not v.has_measures:
        return (
            "No job in this study has a numeric measure result, so there is nothing to compare "
            "with the baselines."
        )
    c = v.comparison
    parts = [_ranking_sentence(v), _prediction_sentence(v)]
    if c.beats:
        parts.insert(0, "A measure beats the trivial baselines in this study.")
    elif c.by_tau is False and c.by_loo is False:
        parts.insert(
            0,
            "No measure beats the trivial baselines in this study, neither in ranking the "
            "models nor in predicting their gap.",
        )
        parts.append(
            "Here the measures say nothing about generalization that the training settings do "
            "not already say, beyond chance: do not use them to choose between these models."
        )
    else:
        parts.insert(0, "No measure beats the trivial baselines in this study.")
        if c.by_tau and c.by_loo is False:
            parts.append("Use it to order models, not to predict their gap.")
    for extra in (
        _calibration_sentence(v),
        _noise_sentence(v),
        _structure_sentence(v),
        _extrapolation_sentence(v),
    ):
        if extra:
            parts.append(extra)
    m = v.best_measure
    if m is not None and m.cmi.value is not None and m.cmi.value < LOW_CMI:
        given = ", ".join(m.cmi.conditioning or [])
        parts.append(
            (f"Once {given} is known, " if given else "")
            + f"{m.name} tells almost nothing about the order of the gaps (normalised "
            f"{'conditional ' if given else ''}mutual information {m.cmi.value:.2f})."
        )
    if v.n < FEW_MODELS:
        parts.append(
            f"Only {v.n} models: |τ| below {2 * tau_noise(v.n):.2f} is within chance, and every "
            "figure here is uncertain; add models to the study."
        )
    return " ".join(parts)

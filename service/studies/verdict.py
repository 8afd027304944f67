"""The analysis in plain words: does any measure beat the trivial baselines, here?

Two tests, both required before a measure is called useful in this study:
- ranking: its |Kendall τ| with the gap exceeds that of every baseline;
- prediction: the measure predictor's leave-one-out MAE is below both the baseline
  predictor's and the mean-gap predictor's.
With few models either can happen by chance: under independence τ has standard deviation
√(2(2n+5) / (9n(n−1))), and the verdict says when |τ| is within two of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.studies.schemas import FeatureReport, LooErrorReport

FEW_MODELS = 10
LOW_CMI = 0.05


def tau_noise(n: int) -> float:
    """Standard deviation of Kendall's τ over n independent pairs (no ties)."""
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))) if n >= 2 else math.inf


def _t(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def _e(x: LooErrorReport | None) -> str:
    return "n/a" if x is None else f"{x.mae:.3g}"


@dataclass
class VerdictInputs:
    n: int
    target: str
    best_measure: FeatureReport | None
    best_baseline: FeatureReport | None
    measure_loo: LooErrorReport | None
    baseline_loo: LooErrorReport | None
    constant_loo: LooErrorReport
    by_tau: bool | None
    by_loo: bool | None
    has_measures: bool


def _ranking_sentence(v: VerdictInputs) -> str:
    m, b = v.best_measure, v.best_baseline
    if m is None:
        return "No measure could be ranked against the gaps (no measure varies across models)."
    if b is None:
        return (
            f"The best-ranking measure is {m.name} (Kendall τ = {_t(m.kendall_tau)}); no "
            "trivial baseline could be computed (give learning_rate and batch_size as "
            "hyperparameters, or add weight_norms to the jobs), so it is not compared with one."
        )
    if v.by_tau:
        return (
            f"{m.name} ranks the gaps best (Kendall τ = {_t(m.kendall_tau)}, Ψ = "
            f"{_t(m.granulated.psi)}), ahead of the best trivial baseline, {b.name} "
            f"(τ = {_t(b.kendall_tau)})."
        )
    return (
        f"No measure ranks the gaps better than the trivial baseline {b.name} "
        f"(τ = {_t(b.kendall_tau)}); the best measure, {m.name}, reaches τ = "
        f"{_t(m.kendall_tau)}."
    )


def _prediction_sentence(v: VerdictInputs) -> str:
    if v.measure_loo is None:
        return "No measure is present on every observed model, so no measure predictor was fit."
    rivals = [f"the mean gap's {_e(v.constant_loo)}"]
    if v.baseline_loo is not None:
        rivals.insert(0, f"the baselines' {_e(v.baseline_loo)}")
    against = " and ".join(rivals)
    if v.by_loo:
        return (
            f"Predicting the gap from the measures has a leave-one-out error (MAE) of "
            f"{_e(v.measure_loo)}, below {against}."
        )
    return (
        f"Predicting the gap from the measures is no more accurate than that: leave-one-out "
        f"MAE {_e(v.measure_loo)} against {against}."
    )


def verdict(v: VerdictInputs) -> str:
    if not v.has_measures:
        return (
            "No job in this study has a numeric measure result, so there is nothing to compare "
            "with the baselines."
        )
    parts = [_ranking_sentence(v), _prediction_sentence(v)]
    if v.by_tau is False and v.by_loo is False:
        parts.insert(
            0,
            "No measure beats the trivial baselines in this study, neither in ranking the "
            "models nor in predicting their gap.",
        )
        parts.append(
            "Here the measures say nothing about generalization that the training settings do "
            "not already say: do not use them to choose between these models."
        )
    elif v.by_tau and v.by_loo:
        chance = v.best_measure is not None and abs(
            v.best_measure.kendall_tau or 0.0
        ) < 2 * tau_noise(v.n)
        parts.insert(
            0,
            "A measure beats the trivial baselines in this study"
            + (", though with so few models possibly by chance." if chance else "."),
        )
    elif v.by_tau and v.by_loo is False:
        parts.append("Use it to order models, not to predict their gap.")
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

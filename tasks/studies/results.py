"""The plain shapes the study statistics read and write: a member as declared with the study,
and the analysis with its per-feature reports and per-member predictions.

They are dataclasses, not the API's pydantic models, so the statistics run without the web
package; service/studies/schemas.py declares the same fields for the HTTP responses (with
their descriptions) and validates these into them. The meaning of each field is documented
there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Target = Literal["accuracy_gap", "loss_gap"]
MIN_MODELS = 4  # observed models an analysis needs


@dataclass
class MemberEntry:
    """One model of the sweep as the study declares it."""

    job: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    test_accuracy: float | None = None
    test_loss: float | None = None
    group: str | None = None


@dataclass
class MemberData:
    """What the statistics know of one member job (members.py reads it from the record)."""

    job: str
    hyperparameters: dict[str, Any]
    state: str
    gap: float | None = None
    gap_source: str | None = None
    measures: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, float | None] = field(default_factory=dict)
    model: str | None = None  # the uploaded model's id: members sharing one are duplicates
    group: str | None = None  # a declared group (e.g. seeds of one configuration)
    noise_se: float | None = None  # binomial standard error of the gap (accuracy gap only)
    test_examples: int | None = None


@dataclass
class MemberPrediction:
    gap: float
    interval: list[float] | None
    level: float
    kind: Literal["leave_one_out", "new"]
    note: str | None = None
    calibrated: bool = True
    extrapolation: bool = False
    outside_range: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class LooErrorReport:
    mae: float
    rmse: float
    n: int
    se: float | None = None


@dataclass
class Significance:
    method: Literal["exact", "monte_carlo"]
    permutations: int
    tau_p: float | None
    tau_p_adjusted: float | None
    psi_p: float | None
    psi_p_adjusted: float | None
    tau_interval: list[float] | None
    vs_best_baseline_p: float | None
    beats_p: float | None
    vs_baseline: str | None = None


@dataclass
class HyperparameterTau:
    tau: float | None
    groups: int


@dataclass
class GranulatedKendall:
    psi: float | None
    per_hyperparameter: dict[str, HyperparameterTau]


@dataclass
class ConditionalMIReport:
    value: float | None
    conditioning: list[str] | None


@dataclass
class FeatureReport:
    name: str
    kind: Literal["measure", "baseline"]
    n: int
    transform: Literal["log", "none"]
    kendall_tau: float | None
    granulated: GranulatedKendall
    cmi: ConditionalMIReport
    loo: LooErrorReport | None
    significance: Significance | None = None


@dataclass
class PredictorReport:
    features: list[str]
    chosen: list[str]
    fold_choices: dict[str, int]
    loo: LooErrorReport
    interval_coverage: float | None


@dataclass
class LooMargin:
    difference: float
    se: float
    p: float | None = None


@dataclass
class BaselineComparison:
    beats: bool
    by_tau: bool | None
    by_loo: bool | None
    alpha: float
    measure: str | None = None
    p_value: float | None = None
    vs_constant: LooMargin | None = None
    vs_baselines: LooMargin | None = None


@dataclass
class NoiseFloor:
    models: int
    min_test_examples: int
    max_test_examples: int
    noise_sd: float
    gap_sd: float
    statistic: float
    critical: float
    within: bool


@dataclass
class StudyAnalysis:
    n_models: int
    n_members: int
    groups: int
    hyperparameters: list[str]
    measures: list[FeatureReport]
    baselines: list[FeatureReport]
    predictor: PredictorReport | None
    baseline_predictor: PredictorReport | None
    constant_predictor: LooErrorReport
    best_measure: str | None
    beats_baselines: BaselineComparison
    verdict: str
    duplicates: list[list[str]] = field(default_factory=list)
    predictor_beats_mean_gap: bool | None = None
    predictor_vs_mean_gap: LooMargin | None = None
    noise_floor: NoiseFloor | None = None
    warnings: list[str] = field(default_factory=list)

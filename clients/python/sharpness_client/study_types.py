"""Typed models of studies (a sweep of checkpoints whose measured sharpness is ranked against
their observed generalization gaps), one per schema of openapi.yaml; sharpness_client.types
re-exports them, and tests/sdk/test_types_contract.py holds them to the contract."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from sharpness_client._api_model import ApiModel as _Model
from sharpness_client._api_model import Page

StudyTarget = Literal["accuracy_gap", "loss_gap"]


class StudyJob(_Model):
    """One model of a study: its job, the hyperparameters it was trained with (learning_rate
    and batch_size enable the baselines) and its observed test metrics, if known."""

    job: str
    hyperparameters: dict[str, int | float | str] = Field(default_factory=dict)
    test_accuracy: float | None = None
    test_loss: float | None = None
    group: str | None = None  # models held out together (e.g. seeds of one configuration)


class StudyCreate(_Model):
    """The body of `POST /v1/studies`."""

    name: str
    jobs: list[StudyJob]
    target: StudyTarget = "accuracy_gap"
    level: float = 0.9


class StudySummary(_Model):
    id: str
    name: str
    created_at: datetime
    target: StudyTarget
    level: float
    jobs: int


StudyPage = Page[StudySummary]


class MemberPrediction(_Model):
    """kind leave_one_out: predicted without the model's own gap; new: its gap is unknown."""

    gap: float
    interval: list[float] | None
    level: float
    kind: Literal["leave_one_out", "new"]
    note: str | None = None
    calibrated: bool = True
    extrapolation: bool = False
    outside_range: dict[str, list[float]] = Field(default_factory=dict)


class StudyMember(_Model):
    job: str
    hyperparameters: dict[str, int | float | str]
    test_accuracy: float | None = None
    test_loss: float | None = None
    state: Literal["waiting", "observed", "to_predict", "failed", "missing"]
    gap: float | None = None
    gap_source: str | None = None
    model: str | None = None
    group: str | None = None
    gap_noise: float | None = None
    prediction: MemberPrediction | None = None


class LooErrorReport(_Model):
    mae: float
    rmse: float
    n: int
    se: float | None = None


class Significance(_Model):
    """Permutation p-values of τ and Ψ (exact up to 8 models), Holm-adjusted across the
    measures, a bootstrap interval of τ, and the test against the best baseline."""

    method: Literal["exact", "monte_carlo"]
    permutations: int
    tau_p: float | None
    tau_p_adjusted: float | None
    psi_p: float | None
    psi_p_adjusted: float | None
    tau_interval: list[float] | None
    vs_best_baseline_p: float | None
    vs_baseline: str | None = None
    beats_p: float | None


class HyperparameterTau(_Model):
    tau: float | None
    groups: int


class GranulatedKendall(_Model):
    psi: float | None
    per_hyperparameter: dict[str, HyperparameterTau]


class ConditionalMIReport(_Model):
    value: float | None
    conditioning: list[str] | None


class FeatureReport(_Model):
    """One measure or baseline against the observed gaps: τ, Ψ, CMI, single-feature LOO."""

    name: str
    kind: Literal["measure", "baseline"]
    n: int
    transform: Literal["log", "none"]
    kendall_tau: float | None
    granulated: GranulatedKendall
    cmi: ConditionalMIReport
    loo: LooErrorReport | None
    significance: Significance | None = None


class PredictorReport(_Model):
    features: list[str]
    chosen: list[str]
    fold_choices: dict[str, int]
    loo: LooErrorReport
    interval_coverage: float | None


class LooMargin(_Model):
    difference: float
    se: float
    p: float | None = None


class BaselineComparison(_Model):
    """beats: a measure beats the best baseline significantly (Holm-corrected) and the measure
    predictor beats the baseline and mean-gap predictors by more than a standard error."""

    beats: bool
    by_tau: bool | None
    by_loo: bool | None
    measure: str | None = None
    p_value: float | None = None
    alpha: float
    vs_constant: LooMargin | None = None
    vs_baselines: LooMargin | None = None


class NoiseFloor(_Model):
    """The accuracy gaps' spread against the binomial noise of the test sets."""

    models: int
    min_test_examples: int
    max_test_examples: int
    noise_sd: float
    gap_sd: float
    statistic: float
    critical: float
    within: bool


class StudyAnalysis(_Model):
    n_models: int
    n_members: int
    groups: int
    duplicates: list[list[str]] = Field(default_factory=list)
    hyperparameters: list[str]
    measures: list[FeatureReport]
    baselines: list[FeatureReport]
    predictor: PredictorReport | None
    baseline_predictor: PredictorReport | None
    constant_predictor: LooErrorReport
    best_measure: str | None
    beats_baselines: BaselineComparison
    predictor_beats_mean_gap: bool | None = None
    predictor_vs_mean_gap: LooMargin | None = None
    noise_floor: NoiseFloor | None = None
    warnings: list[str] = Field(default_factory=list)
    verdict: str


class Study(_Model):
    """A study with its members' states and, once ready, the analysis and `verdict`."""

    id: str
    name: str
    created_at: datetime
    target: StudyTarget
    level: float
    status: Literal["waiting", "ready", "insufficient"]
    message: str
    members: list[StudyMember]
    analysis: StudyAnalysis | None = None

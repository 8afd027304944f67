"""Request and response shapes of /v1/studies. The statistics (tasks/studies) write plain
dataclasses of the same fields (tasks/studies/results.py); service.py validates them into
these models, which carry the descriptions the API documents."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from tasks.studies.results import MIN_MODELS, Target

HpValue = StrictInt | StrictFloat | StrictStr
MAX_JOBS = 500


class StudyJob(BaseModel):
    """One model of the sweep: its job, how it was trained, and its test metrics if known."""

    model_config = ConfigDict(extra="forbid")

    job: str = Field(pattern=r"^[0-9a-f]{32}$", description="Id of a job on this service.")
    hyperparameters: dict[str, HpValue] = Field(
        default_factory=dict,
        max_length=32,
        description="How the model was trained: name → number or string (learning_rate, "
        "batch_size, weight_decay, ...). learning_rate and batch_size enable the baselines.",
    )
    test_accuracy: float | None = Field(
        default=None, ge=0, le=1, description="Observed test accuracy (0..1), if known."
    )
    test_loss: float | None = Field(default=None, ge=0, description="Observed test loss.")
    group: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Models that are not independent of each other share a group (e.g. the "
        "seeds of one configuration): leave-one-out holds the whole group out, and the "
        "bootstrap resamples whole groups. Jobs on the same uploaded model are grouped "
        "(merged) without asking.",
    )


class StudyCreate(BaseModel):
    """A sweep of related models whose gaps calibrate the measures."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    jobs: list[StudyJob] = Field(min_length=1, max_length=MAX_JOBS)
    target: Target = Field(
        default="accuracy_gap",
        description="accuracy_gap: train accuracy − test accuracy; loss_gap: test loss − "
        "train loss.",
    )
    level: float = Field(
        default=0.9, gt=0, lt=1, description="Nominal coverage of the prediction intervals."
    )


class StudySummary(BaseModel):
    id: str
    name: str
    created_at: datetime
    target: Target
    level: float
    jobs: int = Field(description="Number of member jobs.")


class StudyPage(BaseModel):
    items: list[StudySummary]
    next_cursor: str | None = None


class MemberPrediction(BaseModel):
    """A member's predicted gap with its conformal interval."""

    gap: float
    interval: list[float] | None = Field(
        description="[low, high]; null when too few models for the level and the gap has no "
        "natural range."
    )
    level: float
    kind: Literal["leave_one_out", "new"] = Field(
        description="leave_one_out: predicted without this model's own gap (its gap is known); "
        "new: its gap is unknown."
    )
    note: str | None = None
    calibrated: bool = Field(
        default=True,
        description="False when the predictor does no better than predicting the mean gap, "
        "or when the model lies outside the study's range (extrapolation).",
    )
    extrapolation: bool = Field(
        default=False,
        description="Some feature the predictor uses lies outside the range of the study's "
        "observed models: the interval is widened by the extrapolated part of the prediction "
        "and carries no coverage guarantee.",
    )
    outside_range: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Feature → [min, max] of the study's observed models, for each feature "
        "this model's value lies outside of.",
    )


class StudyMember(BaseModel):
    job: str
    hyperparameters: dict[str, HpValue]
    test_accuracy: float | None = None
    test_loss: float | None = None
    state: Literal["waiting", "observed", "to_predict", "failed", "missing"] = Field(
        description="waiting: the job is queued or running; observed: succeeded with a gap; "
        "to_predict: succeeded without one; failed: failed or cancelled; missing: deleted."
    )
    gap: float | None = Field(default=None, description="Observed gap (the study's target).")
    gap_source: str | None = Field(default=None, description="Where the observed gap came from.")
    model: str | None = Field(default=None, description="Id of the job's uploaded model.")
    group: str | None = Field(default=None, description="The group declared with the study.")
    gap_noise: float | None = Field(
        default=None,
        description="Binomial standard error of the accuracy gap from the test-set size "
        "(evaluation.test.num_examples).",
    )
    prediction: MemberPrediction | None = None


class LooErrorReport(BaseModel):
    mae: float = Field(description="Leave-one-out mean absolute error.")
    rmse: float = Field(description="Leave-one-out root mean squared error.")
    n: int
    se: float | None = Field(
        default=None,
        description="Standard error of the MAE over the models (over the groups left out "
        "together).",
    )


class Significance(BaseModel):
    """Permutation and bootstrap tests of one feature's ranking of the gaps."""

    method: Literal["exact", "monte_carlo"] = Field(
        description="exact: every permutation of the gaps enumerated (up to 8 models); "
        "monte_carlo: random permutations from a seeded generator, p = (b + 1)/(m + 1)."
    )
    permutations: int
    tau_p: float | None = Field(description="Two-sided permutation p-value of Kendall τ.")
    tau_p_adjusted: float | None = Field(
        description="tau_p after Holm's correction across the study's measures (measures only)."
    )
    psi_p: float | None = Field(description="Two-sided permutation p-value of Ψ.")
    psi_p_adjusted: float | None = Field(
        description="psi_p after Holm's correction across the study's measures."
    )
    tau_interval: list[float] | None = Field(
        description="95% bootstrap percentile interval of τ (models, or groups, resampled)."
    )
    vs_best_baseline_p: float | None = Field(
        description="One-sided paired bootstrap p-value that the measure ranks the gaps better "
        "than the best baseline (chosen once, by |τ| on all the models; the same resamples for "
        "both); measures only."
    )
    vs_baseline: str | None = Field(
        default=None, description="The baseline vs_best_baseline_p compares with."
    )
    beats_p: float | None = Field(
        description="max(tau_p, vs_best_baseline_p) after Holm's correction across the "
        "measures: significant when ≤ alpha."
    )


class HyperparameterTau(BaseModel):
    tau: float | None = Field(description="Mean τ over the groups that vary only this one.")
    groups: int = Field(description="Groups of ≥ 2 models with differing gaps used.")


class GranulatedKendall(BaseModel):
    psi: float | None = Field(description="Ψ: the mean of the per-hyperparameter τ.")
    per_hyperparameter: dict[str, HyperparameterTau]


class ConditionalMIReport(BaseModel):
    value: float | None = Field(
        description="min over conditioning sets S (|S| ≤ 2) of I(V_μ; V_g | U_S) / H(V_g | U_S)."
    )
    conditioning: list[str] | None = Field(description="The minimising S.")


class FeatureReport(BaseModel):
    """The statistics of one measure or baseline against the observed gaps."""

    name: str
    kind: Literal["measure", "baseline"]
    n: int = Field(description="Models with both this value and a gap.")
    transform: Literal["log", "none"] = Field(
        description="Encoding (the value or its log) chosen by LOO for the single-feature "
        "predictor."
    )
    kendall_tau: float | None
    granulated: GranulatedKendall
    cmi: ConditionalMIReport
    loo: LooErrorReport | None = Field(
        description="LOO error of a ridge predictor of the gap from this value alone."
    )
    significance: Significance | None = None


class PredictorReport(BaseModel):
    """A gap predictor chosen and scored by nested leave-one-out."""

    features: list[str] = Field(description="Features it may choose from.")
    chosen: list[str] = Field(description="Features chosen on all observed models.")
    fold_choices: dict[str, int] = Field(
        description="How often each choice was made across the leave-one-out folds."
    )
    loo: LooErrorReport
    interval_coverage: float | None = Field(
        description="Share of observed models whose leave-one-out interval covers their gap."
    )


class LooMargin(BaseModel):
    difference: float = Field(description="The rival's LOO MAE minus the measure predictor's.")
    se: float = Field(description="Standard error of that difference (paired over models).")
    p: float | None = Field(
        default=None,
        description="One-sided p-value that the predictor's absolute LOO errors are smaller "
        "than the rival's: a paired sign-flip test over the groups left out together.",
    )


class BaselineComparison(BaseModel):
    beats: bool = Field(
        description="by_tau and by_loo: a measure beats the best baseline significantly after "
        "Holm's correction, and the measure predictor beats both the baseline and the mean-gap "
        "predictor by more than a standard error."
    )
    by_tau: bool | None = Field(
        description="Some measure's τ is significant and its |τ| significantly exceeds the "
        "best baseline's, both after Holm's correction across the measures (beats_p ≤ alpha)."
    )
    by_loo: bool | None = Field(
        description="The measure predictor's LOO MAE is below the baseline and the mean-gap "
        "predictors' by more than the standard error of each difference."
    )
    measure: str | None = Field(default=None, description="The measure with the smallest beats_p.")
    p_value: float | None = Field(default=None, description="Its beats_p (Holm-adjusted).")
    alpha: float = Field(description="Significance level of the tests.")
    vs_constant: LooMargin | None = None
    vs_baselines: LooMargin | None = None


class NoiseFloor(BaseModel):
    """How much the accuracy gaps would differ from test-set sampling alone."""

    models: int = Field(description="Observed models whose test-set size is known.")
    min_test_examples: int
    max_test_examples: int
    noise_sd: float = Field(description="√(mean of the gaps' binomial variances).")
    gap_sd: float = Field(description="Standard deviation of the observed gaps.")
    statistic: float = Field(
        description="Σ (gapᵢ − weighted mean)² / seᵢ², χ² with models − 1 degrees of freedom "
        "if the true gaps were all equal."
    )
    critical: float = Field(description="Its 95% quantile.")
    within: bool = Field(
        description="The spread is within the noise floor (statistic ≤ critical): the gaps' "
        "differences may be test-set sampling noise."
    )


class StudyAnalysis(BaseModel):
    n_models: int = Field(
        description="Observed models (succeeded, with a gap), jobs on one uploaded model "
        "counted once."
    )
    n_members: int = Field(description="Member jobs on the observed models (duplicates counted).")
    groups: int = Field(description="Groups left out together (independent units).")
    duplicates: list[list[str]] = Field(
        default_factory=list,
        description="Member jobs on one uploaded model, merged into one model (mean values).",
    )
    hyperparameters: list[str]
    measures: list[FeatureReport]
    baselines: list[FeatureReport]
    predictor: PredictorReport | None = Field(description="From the measures.")
    baseline_predictor: PredictorReport | None = Field(description="From the baselines.")
    constant_predictor: LooErrorReport = Field(description="Predicting the mean gap.")
    best_measure: str | None = Field(description="The measure with the largest |τ|.")
    beats_baselines: BaselineComparison
    predictor_beats_mean_gap: bool | None = Field(
        default=None,
        description="The predictor used for the members' predictions has a lower LOO MAE than "
        "predicting the mean gap significantly (predictor_vs_mean_gap.p ≤ 0.05); when false "
        "no prediction is calibrated.",
    )
    predictor_vs_mean_gap: LooMargin | None = Field(
        default=None,
        description="The predictor used for the members' predictions against predicting the "
        "mean gap: MAE difference, its standard error and the one-sided paired p-value.",
    )
    noise_floor: NoiseFloor | None = Field(
        default=None, description="Accuracy gaps with known test-set sizes only."
    )
    warnings: list[str] = Field(default_factory=list)
    verdict: str


class Study(BaseModel):
    id: str
    name: str
    created_at: datetime
    target: Target
    level: float
    status: Literal["waiting", "ready", "insufficient"] = Field(
        description=f"waiting: fewer than {MIN_MODELS} observed models yet, jobs still running; "
        f"ready: analysed; insufficient: every job finished with fewer than {MIN_MODELS} gaps."
    )
    message: str = Field(description="Where the study stands, in plain words.")
    members: list[StudyMember]
    analysis: StudyAnalysis | None = None

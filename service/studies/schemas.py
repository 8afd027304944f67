"""Request and response shapes of /v1/studies (the logic lives beside, in service/studies)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

Target = Literal["accuracy_gap", "loss_gap"]
HpValue = StrictInt | StrictFloat | StrictStr
MIN_MODELS = 4
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
    prediction: MemberPrediction | None = None


class LooErrorReport(BaseModel):
    mae: float = Field(description="Leave-one-out mean absolute error.")
    rmse: float = Field(description="Leave-one-out root mean squared error.")
    n: int


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


class BaselineComparison(BaseModel):
    by_tau: bool | None = Field(description="Some measure has a larger |τ| than every baseline.")
    by_loo: bool | None = Field(
        description="The measure predictor's LOO MAE is below the baseline and constant ones."
    )


class StudyAnalysis(BaseModel):
    n_models: int = Field(description="Observed models (succeeded, with a gap).")
    hyperparameters: list[str]
    measures: list[FeatureReport]
    baselines: list[FeatureReport]
    predictor: PredictorReport | None = Field(description="From the measures.")
    baseline_predictor: PredictorReport | None = Field(description="From the baselines.")
    constant_predictor: LooErrorReport = Field(description="Predicting the mean gap.")
    best_measure: str | None = Field(description="The measure with the largest |τ|.")
    beats_baselines: BaselineComparison
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

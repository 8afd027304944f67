"""A job: the measures a client asks for on one model and dataset (`JobSpec`), and the record
that holds their results (`Job`).

Measure parameters are validated against the contract's catalogue of measures
(tasks.contract.measures.catalogue), so a bad measure name or an out-of-bounds parameter is
refused at submission with the field named."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tasks.contract.inputs import (
    CLASS_DIM,
    MODEL_ID_PATTERN,
    OUTPUT_KEY,
    PRECISION,
    DatasetRef,
    Precision,
)
from tasks.contract.measures import catalogue
from tasks.contract.measures.catalogue import DATA_PARALLEL_MEASURES
from tasks.contract.runs import MeasureProgress, RunRecord


class MeasureRequest(BaseModel):
    """One measure of the registry, by name, with its parameters (defaults filled in)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="A measure name from GET /v1/measures.")
    params: dict[str, Any] = Field(default_factory=dict, validate_default=True)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        try:
            catalogue.get(name)
        except KeyError as e:  # pydantic reports ValueError, not KeyError, as a field error
            raise ValueError(e.args[0]) from None
        return name

    @field_validator("params")
    @classmethod
    def _valid_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Validated here, not after the model, so an error's location is `params.<field>`."""
        if "name" not in info.data:  # the name was refused; that error says it all
            return params
        return catalogue.validate_params(info.data["name"], params).model_dump()


class JobSpec(BaseModel):
    """What to measure, on which model and data."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(pattern=MODEL_ID_PATTERN, description="Id of an uploaded model.")
    dataset: DatasetRef
    loss: Literal["cross_entropy", "mse"] = Field(
        default="cross_entropy",
        description="Mean over every counted target of the dataset: cross_entropy over outputs "
        "(N, C), (N, T, …, C) or (N, C, T, …) with integer labels (-100 ignored) or class "
        "probabilities; mse over every target element.",
    )
    output_key: str | None = OUTPUT_KEY
    class_dim: Literal[1, -1] | None = CLASS_DIM
    mode: Literal["eval", "train"] = Field(
        default="eval",
        description="eval: dropout off, BatchNorm on running statistics. train: results "
        "depend on batch composition (the result says so).",
    )
    dropout_seed: int = Field(
        default=0,
        ge=0,
        le=2**63 - 1,
        description="Train mode only: seeds the dropout masks. Each batch gets one mask, drawn "
        "from this seed and the batch's contents, and every forward pass over that batch "
        "uses it (within a Hessian-vector product, across products, in every measure and "
        "parameter block of the job), so the loss is a fixed function of the weights and its "
        "Hessian a fixed symmetric matrix. Another seed measures another draw of the masks. "
        "Reported as diagnostics.dropout_seed when the model has active dropout.",
    )
    measures: list[MeasureRequest] = Field(min_length=1, max_length=32)
    eval_dataset: DatasetRef | None = Field(
        default=None,
        description="Held-out data: the job then reports train and test loss and accuracy and "
        "the measured generalization gap under 'evaluation'. Never used for the Hessian.",
    )
    initial_model: str | None = Field(
        default=None,
        pattern=MODEL_ID_PATTERN,
        description="Id of an uploaded checkpoint of the same architecture at initialisation "
        "(w₀): enables ‖w − w₀‖ in weight_norms and the distance term of pacbayes_bound.",
    )
    optimizer_state: str | None = Field(
        default=None,
        pattern=MODEL_ID_PATTERN,
        description="Id of Adam's state at these weights, uploaded with POST "
        "/v1/trajectories/optimizer-states (safetensors: `exp_avg_sq.<parameter name>` and "
        "`step`): what preconditioned_lambda_max needs.",
    )
    precision: Precision = PRECISION
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data_parallel: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes that measure the job together: the dataset is split between "
        "them and every loss, gradient and Hessian-vector product is summed over all of them "
        "(torch.distributed: NCCL with one GPU per process for device cuda, gloo on the CPU), "
        "so the result equals one process's to float64 rounding; diagnostics.world_size says "
        "how many ran it. A cuda job needs that many GPUs on one worker (else the job fails "
        "with device-unavailable). Curvature measures and weight_norms only: "
        + ", ".join(sorted(DATA_PARALLEL_MEASURES))
        + ".",
    )
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)

    @field_validator("measures")
    @classmethod
    def _unique(cls, measures: list[MeasureRequest]) -> list[MeasureRequest]:
        names = [m.name for m in measures]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"each measure may appear once; repeated: {', '.join(dupes)}")
        return measures

    @model_validator(mode="after")
    def _data_parallel_measures(self) -> JobSpec:
        if self.data_parallel > 1:
            other = [m.name for m in self.measures if m.name not in DATA_PARALLEL_MEASURES]
            if other:
                raise ValueError(
                    f"data_parallel={self.data_parallel}: {', '.join(other)} read the data "
                    "outside the summed loss, gradient and Hessian products and run in one "
                    "process only; measure them in a job without data_parallel"
                )
        return self


class MeasureResult(BaseModel):
    """A measure's value with the diagnostics that say how far to trust it."""

    model_config = ConfigDict(extra="allow")

    value: Any = Field(description="The measure's headline figure (a float or a list).")
    converged: bool | None = None
    hvps: int | None = Field(default=None, description="Hessian-vector products used.")
    seconds: float | None = None
    diagnostics: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    per_layer: dict[str, Any] | None = None


class StudyPrediction(BaseModel):
    """One study's prediction for a job that is one of its members."""

    study: str = Field(description="Id of the study.")
    name: str = Field(description="The study's name.")
    calibrated: bool = Field(description="True when this study gives a calibrated prediction.")
    gap: float | None = Field(default=None, description="Predicted generalization gap.")
    interval: list[float] | None = Field(
        default=None, description="Conformal prediction interval [low, high] for the gap."
    )
    level: float | None = Field(default=None, description="Nominal coverage of the interval.")
    basis: str = Field(description="What this study's prediction rests on, or why there is none.")
    best_measure: str | None = Field(
        default=None, description="The measure that ranked this study's gaps best, if any."
    )


class Prediction(BaseModel):
    """What the service can honestly say about a job's generalization gap.

    Calibrated only inside a study (a sweep of related checkpoints with observed test metrics);
    outside one, `calibrated` is false and only the measured gap and any bound are returned.
    """

    calibrated: bool = Field(description="True only for a job in a study with a fitted predictor.")
    gap: float | None = Field(default=None, description="Predicted generalization gap.")
    interval: list[float] | None = Field(
        default=None, description="Conformal prediction interval [low, high] for the gap."
    )
    level: float | None = Field(default=None, description="Nominal coverage of the interval.")
    basis: str = Field(description="What the prediction rests on, in plain words.")
    best_measure: str | None = Field(
        default=None, description="The measure that ranked the study's gaps best, if any."
    )
    study: str | None = Field(default=None, description="Id of the study that calibrated it.")
    selection: Literal["no_study", "only_study", "requested", "several_studies"] = Field(
        default="no_study",
        description="How the study behind the prediction was chosen: no_study (the job is in "
        "none); only_study (it is in exactly one); requested (named by ?study=); "
        "several_studies (it is in several and none was named: no gap is picked for you, each "
        "study's prediction is in `studies`, and ?study=<id> reads one).",
    )
    studies: list[StudyPrediction] = Field(
        default_factory=list,
        description="Every study the job is a member of (newest first; only the requested one "
        "with ?study=), each with its own prediction for the job.",
    )
    measured_gap: float | None = Field(
        default=None, description="Gap measured on the job's eval_dataset, when it has one."
    )
    bound: dict[str, Any] | None = Field(
        default=None, description="A PAC-Bayes bound on the test error: a bound, not a prediction."
    )


class Job(RunRecord):
    spec: JobSpec
    progress: dict[str, MeasureProgress] = Field(default_factory=dict)
    results: dict[str, MeasureResult] = Field(default_factory=dict)
    evaluation: dict[str, Any] | None = Field(
        default=None,
        description="Loss and accuracy on the dataset at the measured weights (loss, accuracy, "
        "num_examples, mode); with an eval_dataset also 'test' (the same figures on it) and "
        "'gap' (accuracy: train − test; loss: test − train).",
    )
    prediction: Prediction | None = Field(
        default=None,
        description="Filled in by the gateway when the job is read: calibrated inside a study, "
        "otherwise the measured gap and bound only, labelled as such.",
    )


class JobPage(BaseModel):
    items: list[Job]
    next_cursor: str | None = None

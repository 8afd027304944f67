"""Typed request and response models, one per schema of the service's openapi.yaml.

Written by hand (so they read well and carry docstrings) and held to the contract by
tests/sdk/test_types_contract.py: every schema property exists here and vice versa, with the
same required fields, enum values, types and defaults. Every model keeps unknown fields
(`extra="allow"`) rather than refusing them: a job's spec comes back inside the job record, and
an SDK must keep working against a newer gateway that adds fields. Requests are built from
keyword arguments, so a misspelt argument still fails before any network call.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from sharpness_client._api_model import ApiModel as _Model
from sharpness_client._api_model import Page
from sharpness_client.study_types import (
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
    Study,
    StudyAnalysis,
    StudyCreate,
    StudyJob,
    StudyMember,
    StudyPage,
    StudySummary,
)


# ---------------------------------------------------------------------------- job spec
class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once the job will not change again (what `jobs.wait` waits for)."""
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class DatasetRef(_Model):
    """An uploaded dataset's `id` or a `uri`; how many examples and how to batch them."""

    id: str | None = None
    uri: str | None = None
    max_samples: int | None = None
    batch_size: int = 256
    # one array, a list (positional inputs) or keyword -> array; None: the names stored with
    # the uploaded dataset, else common names (inputs/targets, x/y, ...)
    inputs_key: str | list[str] | dict[str, str] | None = None
    targets_key: str | None = None


class MeasureRequest(_Model):
    """A measure by name (see `GET /v1/measures`) with its parameters; the server fills in
    defaults and checks bounds, naming `measures.N.params.<field>` when one is wrong."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class JobSpec(_Model):
    """What to measure, on which model and data (the body of `POST /v1/jobs`)."""

    model: str
    dataset: DatasetRef
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    output_key: str | None = None  # which output is the logits (dict key or tuple index)
    class_dim: Literal[1, -1] | None = None  # sequence outputs: -1 classes last, 1 torch's
    mode: Literal["eval", "train"] = "eval"
    dropout_seed: int = 0  # train mode: seeds the one dropout mask per batch (reported back)
    measures: list[MeasureRequest]
    eval_dataset: DatasetRef | None = None  # held-out data: test metrics and gap in evaluation
    initial_model: str | None = None  # uploaded model at initialisation (w₀)
    optimizer_state: str | None = None  # uploaded Adam state, for preconditioned_lambda_max
    # the dtype it is measured in: auto (float16/bfloat16 in float32, others as they are),
    # model (its own), float32, float64; each result's diagnostics.precision says which
    precision: Literal["auto", "model", "float32", "float64"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # processes that measure the job together, the data split between them (curvature
    # measures and weight_norms); the result's diagnostics.world_size says how many ran it
    data_parallel: int = 1
    labels: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------------------- job record
class Problem(_Model):
    """RFC 9457 problem details: the body of every error answer and of a failed job."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class MeasureProgress(_Model):
    state: Literal["pending", "running", "done", "failed"] = "pending"
    iteration: int = 0
    estimate: Any = None
    bound: float | None = None  # the estimate's residual bound so far, where it has one
    updated_at: datetime | None = None


class MeasureResult(_Model):
    """A measure's headline `value` with the diagnostics that say how far to trust it.

    `converged` (iterative measures): the error estimate is within the requested accuracy or
    within the rounding level of the model's dtype; `limited_by` says which, or which budget
    stopped the run first (then `converged` is false)."""

    value: Any
    converged: bool | None = None
    hvps: int | None = None
    seconds: float | None = None
    diagnostics: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    per_layer: dict[str, Any] | None = None

    @property
    def limited_by(self) -> str | None:
        """`diagnostics.limited_by`: "tolerance" or "<dtype> rounding" (e.g. "float32
        rounding"; both converged), "iteration budget", "basis budget" or "time" (a budget
        stopped the run: not converged); None where the service did not say."""
        value = self.diagnostics.get("limited_by")
        return value if isinstance(value, str) else None


class StudyPrediction(_Model):
    """One study's prediction for a job that is one of its members."""

    study: str
    name: str
    calibrated: bool
    gap: float | None = None
    interval: list[float] | None = None
    level: float | None = None
    basis: str
    best_measure: str | None = None


class Prediction(_Model):
    """What the service can honestly say about a job's generalization gap: `calibrated` only
    inside a study (then `gap` with its conformal `interval` at `level`); otherwise `basis`
    says why not, with the measured gap and any PAC-Bayes bound (a bound, not a prediction).
    `selection` says how the study was chosen: no_study, only_study, requested (the `study=`
    of jobs.get) or several_studies (no single gap; each study's prediction in `studies`)."""

    calibrated: bool
    gap: float | None = None
    interval: list[float] | None = None
    level: float | None = None
    basis: str
    best_measure: str | None = None
    study: str | None = None
    selection: Literal["no_study", "only_study", "requested", "several_studies"] = "no_study"
    studies: list[StudyPrediction] = Field(default_factory=list)
    measured_gap: float | None = None
    bound: dict[str, Any] | None = None


class Attempt(_Model):
    """One run of a job or trajectory by one worker: who, when, and why it ended
    (succeeded, failed, cancelled, worker-lost, handed-back)."""

    attempt: int
    worker: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str


class RunRecord(_Model):
    """What every run (a job, a trajectory) records of its lifecycle: status, attempts, who ran
    it. The server's records share these fields the same way (Job and Trajectory extend it)."""

    id: str
    status: JobStatus
    queue: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: Problem | None = None
    worker: str | None = None
    device: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    attempts: int = 0
    attempt_history: list[Attempt] = Field(default_factory=list)
    cancel_requested: bool = False
    cancelled_by: str | None = None


class Job(RunRecord):
    spec: JobSpec
    progress: dict[str, MeasureProgress] = Field(default_factory=dict)
    results: dict[str, MeasureResult] = Field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    prediction: Prediction | None = None

    def value(self, measure: str) -> Any:
        """The headline value of one measure (KeyError naming what exists if absent)."""
        try:
            return self.results[measure].value
        except KeyError:
            have = ", ".join(sorted(self.results)) or "none"
            raise KeyError(f"job {self.id} has no result {measure!r}; results: {have}") from None


JobPage = Page[Job]


# ---------------------------------------------------------------------------- uploads
class BlobInfo(_Model):
    """What every upload (model, dataset, optimizer state) has: content-addressed bytes (the
    id is their sha256; uploading them again returns it) and the first upload's filename."""

    id: str
    sha256: str
    size_bytes: int
    created_at: datetime
    filename: str | None = None


class ModelInfo(BlobInfo):
    format: Literal["torch_export", "torchscript", "safetensors", "huggingface"]
    architecture: str | None = None
    config: dict[str, Any] | None = None
    head: str | None = None
    tensors: int | None = None
    parameters: int | None = None
    source: Literal["upload", "uri"] = "upload"
    uri: str | None = None
    layout: Literal["file", "sharded", "folder"] | None = None
    referenced_bytes: int | None = None


class ArrayInfo(_Model):
    dtype: str
    shape: list[int]


class DatasetInfo(BlobInfo):
    format: Literal["npz", "safetensors"]
    arrays: dict[str, ArrayInfo]
    num_examples: int
    inputs_key: str | list[str] | dict[str, str]
    targets_key: str


ModelPage = Page[ModelInfo]
DatasetPage = Page[DatasetInfo]


class OptimizerStateInfo(BlobInfo):
    """An uploaded optimizer state (Adam's `exp_avg_sq.<name>` and `step`, safetensors)."""

    format: Literal["safetensors"]
    parameters: list[str]
    step_dtype: str


# ---------------------------------------------------------------------------- catalogue, ops
class MeasureInfo(_Model):
    name: str
    summary: str
    params_schema: dict[str, Any]


class WorkerInfo(_Model):
    hostname: str
    device: str | None = None
    last_seen: datetime | None = None
    age_s: float | None = None


class RunningJob(_Model):
    id: str
    kind: Literal["job", "trajectory"] = "job"
    queue: str | None = None
    worker: str | None = None
    device: str | None = None
    started_at: datetime | None = None
    owner: str | None = None


class QueueDepth(_Model):
    name: str
    waiting: int
    reserved: int
    queued_jobs: int
    queued_trajectories: int = 0
    oldest_queued_age_s: float | None = None


class QueueStatus(_Model):
    queues: list[QueueDepth]
    workers: list[WorkerInfo]
    running: list[RunningJob]
    oldest_queued_age_s: float | None = None
    jobs_by_status: dict[str, int]
    trajectories_by_status: dict[str, int] = Field(default_factory=dict)
    active_by_tenant: dict[str, int] = Field(default_factory=dict)


class Health(_Model):
    status: Literal["ok"] = "ok"


class Ready(_Model):
    status: Literal["ready"] = "ready"
    checks: dict[str, str]


# ---------------------------------------------------------------------------- trajectories
class TrajectoryCheckpoint(_Model):
    """One checkpoint of a training run: an uploaded model and the learning rate η in effect
    there (the edge of stability is 2/η); `step` places it on the x axis."""

    model: str
    learning_rate: float
    step: int | None = None
    optimizer_state: str | None = None  # adam: an uploaded optimizer state's id


class OptimizerSpec(_Model):
    """The run's optimizer, which sets the edge of stability: gd (2/η), sgd with `momentum`
    β ((2+2β)/η; `nesterov`: (2+2β)/((1+2β)η)), adam (`beta1`, `beta2`, `eps`: λmax(P⁻¹H)
    against (2+2β₁)/((1−β₁)η), P from each checkpoint's optimizer state)."""

    name: Literal["gd", "sgd", "adam"] = "gd"
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


class TrajectorySpec(_Model):
    """Checkpoints in training order on one dataset (the body of `POST /v1/trajectories`)."""

    checkpoints: list[TrajectoryCheckpoint]
    dataset: DatasetRef
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    output_key: str | None = None
    class_dim: Literal[1, -1] | None = None
    mode: Literal["eval", "train"] = "eval"
    precision: Literal["auto", "model", "float32", "float64"] = "auto"  # as a job's
    k: int = 3
    tol: float | None = None
    max_iter: int = 400
    device: Literal["auto", "cpu", "cuda"] = "auto"
    labels: dict[str, str] = Field(default_factory=dict)
    optimizer: OptimizerSpec | None = None  # gd when not sent


class TrajectoryPoint(_Model):
    """One checkpoint measured: λmax, the top-k eigenvalues and `stability_ratio` =
    `stability_quantity` / `stability_threshold`, the edge of the run's optimizer (λmax·η/2
    for gd; above 1: beyond the edge); `mode` and `mode_reason` say how it was measured."""

    index: int
    model: str
    step: int | None = None
    learning_rate: float
    lambda_max: float
    eigenvalues: list[float]
    optimizer: Literal["gd", "sgd", "adam"] = "gd"
    preconditioned_lambda_max: float | None = None
    stability_quantity: Literal["lambda_max", "preconditioned_lambda_max"] = "lambda_max"
    stability_threshold: float | None = None
    stability_ratio: float
    beyond_edge: bool
    mode: Literal["eval", "train"] | None = None
    mode_reason: str | None = None
    precision: dict[str, str] | None = None  # {asked, model_dtype, products_dtype}
    residual_bounds: list[float]
    converged: bool
    limited_by: str | None = None
    iterations: int
    hvps: int
    seconds: float
    dim: int
    loss: float | None = None
    accuracy: float | None = None
    warnings: list[str] = Field(default_factory=list)


class EigenvectorOverlap(_Model):
    """Rotation between checkpoints `start` and `end`: |⟨v₁, v₁'⟩| and ‖VᵀV'‖²_F/k in [0, 1]."""

    start: int
    end: int
    top_overlap: float
    subspace_overlap: float
    principal_cosines: list[float]


class Trajectory(RunRecord):
    spec: TrajectorySpec
    progress: list[MeasureProgress] = Field(default_factory=list)
    points: list[TrajectoryPoint] = Field(default_factory=list)
    overlaps: list[EigenvectorOverlap] = Field(default_factory=list)
    edge_analysis: dict[str, Any] = Field(default_factory=dict)  # overlaps split at the edge


TrajectoryPage = Page[Trajectory]


# ---------------------------------------------------------------------------- comparison
class MeasureComparison(_Model):
    """One measure of a job against the same measure of a baseline job. `bounds` are each
    result's error bar [low, high] (`error_basis`: its 95% interval, or value ±
    error_estimate); `exceeds_error_bars` is True when the two bars do not overlap, None when
    neither result has one. `caveats` say why the comparison may mislead."""

    measure: str
    value: float
    baseline_value: float
    difference: float  # value − baseline_value
    ratio: float | None = None  # None when the baseline value is 0
    bounds: list[float] | None = None
    baseline_bounds: list[float] | None = None
    error_basis: Literal["interval", "error_estimate", "none"]
    baseline_error_basis: Literal["interval", "error_estimate", "none"]
    exceeds_error_bars: bool | None = None
    caveats: list[str] = Field(default_factory=list)


class Comparison(_Model):
    """`client.jobs.compare(job, baseline=...)`: per measure both jobs have as a number, and
    what differs between the jobs as a whole (`caveats`: data, model format, loss, mode)."""

    job: str
    baseline: str
    measures: list[MeasureComparison]
    not_compared: dict[str, str] = Field(default_factory=dict)  # measure → why it is left out
    caveats: list[str] = Field(default_factory=list)

    def measure(self, name: str) -> MeasureComparison | None:
        """The comparison of one measure, or None when it was not compared."""
        return next((m for m in self.measures if m.measure == name), None)


__all__ = [
    "ArrayInfo",
    "BaselineComparison",
    "Comparison",
    "ConditionalMIReport",
    "DatasetInfo",
    "DatasetPage",
    "DatasetRef",
    "EigenvectorOverlap",
    "FeatureReport",
    "GranulatedKendall",
    "Health",
    "HyperparameterTau",
    "Job",
    "JobPage",
    "JobSpec",
    "JobStatus",
    "LooErrorReport",
    "LooMargin",
    "MeasureComparison",
    "MeasureInfo",
    "MeasureProgress",
    "MeasureRequest",
    "MeasureResult",
    "MemberPrediction",
    "ModelInfo",
    "ModelPage",
    "NoiseFloor",
    "Page",
    "Prediction",
    "PredictorReport",
    "Problem",
    "QueueDepth",
    "QueueStatus",
    "Ready",
    "RunningJob",
    "Significance",
    "Study",
    "StudyAnalysis",
    "StudyCreate",
    "StudyJob",
    "StudyMember",
    "StudyPage",
    "StudyPrediction",
    "StudySummary",
    "Trajectory",
    "TrajectoryCheckpoint",
    "TrajectoryPage",
    "TrajectoryPoint",
    "TrajectorySpec",
    "WorkerInfo",
]

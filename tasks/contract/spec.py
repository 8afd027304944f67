"""The one job spec: what a client asks for and what a job record holds.

Both the gateway and the worker import this module; it must never import torch or the
engine. Measure parameters are validated against the contract's catalogue of measures
(tasks.contract.measures.catalogue), so a bad measure name or an out-of-bounds parameter is
refused at submission with the field named.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tasks.contract.datanames import validate_inputs_key
from tasks.contract.edge_analysis import edge_split
from tasks.contract.measures import catalogue
from tasks.contract.measures.catalogue import DATA_PARALLEL_MEASURES

MODEL_ID_PATTERN = r"^[0-9a-f]{64}$"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


OUTPUT_KEY = Field(
    default=None,
    max_length=64,
    description="Which output is the logits when the model returns a tuple, a dict or a "
    "Hugging Face ModelOutput: a key, or an index for a tuple. Default 'logits', else the "
    "first tensor.",
)
CLASS_DIM = Field(
    default=None,
    description="cross_entropy on sequence outputs: -1 for classes last (N, T, C), Hugging "
    "Face's layout; 1 for classes on dim 1 (N, C, T), torch's. Omitted: read from the shapes; "
    "refused when both fit.",
)


class DatasetRef(BaseModel):
    """Either an uploaded dataset's id or a URI; how many examples and how to batch them."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=MODEL_ID_PATTERN, description="Uploaded id.")
    uri: str | None = Field(
        default=None,
        max_length=2048,
        description="Reference instead of an upload: file:// below the configured data root, "
        "or http(s):// when enabled. .npz or .safetensors.",
    )
    max_samples: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Use only the first N examples."
    )
    batch_size: int = Field(default=256, ge=1, le=65_536)
    inputs_key: str | list[str] | dict[str, str] | None = Field(
        default=None,
        description="The model's inputs: one array name; a list of names (positional "
        'arguments, in order); or keyword → array name (for example {"input_ids": '
        '"input_ids", "attention_mask": "attention_mask"}). Omitted: the names stored '
        "with the uploaded dataset, else common names (inputs/targets, x/y, X/y, data/labels, "
        "images/labels, input_ids/labels) when exactly one pair fits.",
    )
    targets_key: str | None = Field(
        default=None,
        max_length=128,
        description="The targets array. Omitted: as for inputs_key.",
    )

    @field_validator("inputs_key")
    @classmethod
    def _inputs_key(cls, value: Any) -> Any:
        return None if value is None else validate_inputs_key(value)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetRef:
        if (self.id is None) == (self.uri is None):
            raise ValueError("give exactly one of 'id' or 'uri'")
        return self


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


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class MeasureProgress(BaseModel):
    state: Literal["pending", "running", "done", "failed"] = "pending"
    iteration: int = 0
    estimate: Any = None
    updated_at: datetime | None = None


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


class Attempt(BaseModel):
    """One run of a record by one worker: who, when, and why it ended."""

    attempt: int = Field(description="1 for the first run, 2 for the next, ...")
    worker: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str = Field(
        description="succeeded, failed, cancelled; worker-lost (its heartbeats stopped: the "
        "record was requeued or, with its attempts spent, failed); handed-back (the worker "
        "shut down and returned it to the queue)"
    )


class RunRecord(BaseModel):
    """What every run (a job, a trajectory) records of its lifecycle: queued → running →
    succeeded, failed or cancelled, each attempt, and who ran it. The stores write these
    fields the same way for every kind (tasks/store/records.py RecordStore)."""

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
    attempt_history: list[Attempt] = Field(
        default_factory=list, description="Each ended run of the record, oldest first."
    )
    cancel_requested: bool = False


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


# =============================================================================== trajectories
# A trajectory: an ordered list of checkpoints of one training run, each measured for λmax and
# its top-k Hessian eigenvectors; between consecutive checkpoints, how far those eigenvectors
# turned (Wang & Roberts 2024). A resource of its own (/v1/trajectories), run by its own task.


class TrajectoryCheckpoint(BaseModel):
    """One checkpoint of the run: an uploaded model and the learning rate it was trained at."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(pattern=MODEL_ID_PATTERN, description="Id of an uploaded model.")
    learning_rate: float = Field(
        gt=0, le=1e6, description="η in effect at this checkpoint: the edge of stability is 2/η."
    )
    step: int | None = Field(
        default=None, ge=0, description="Training step of the checkpoint (for the x axis)."
    )
    optimizer_state: str | None = Field(
        default=None,
        pattern=MODEL_ID_PATTERN,
        description="Id of the optimizer state at this checkpoint, uploaded with POST "
        "/v1/trajectories/optimizer-states (safetensors: `exp_avg_sq.<parameter name>` and "
        "`step`). Required for every checkpoint when the optimizer is 'adam'.",
    )


class OptimizerSpec(BaseModel):
    """How the run was trained: the edge of stability depends on it (tasks.engine.stability).

    {"name": "gd"}: plain gradient descent, edge 2/η. {"name": "sgd", "momentum": β,
    "nesterov": false}: PyTorch's SGD (dampening 0), edge (2 + 2β)/η, Nesterov
    (2 + 2β)/((1 + 2β)η). {"name": "adam", "beta1", "beta2", "eps"}: Adam (or AdamW), edge
    (2 + 2β₁)/((1 − β₁)η) on the preconditioned sharpness λmax(P⁻¹H), P from each checkpoint's
    optimizer state."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["gd", "sgd", "adam"] = "gd"
    momentum: float = Field(default=0.0, ge=0, lt=1, description="sgd: β (PyTorch's momentum).")
    nesterov: bool = Field(default=False, description="sgd: Nesterov momentum.")
    beta1: float = Field(default=0.9, ge=0, lt=1, description="adam: β₁.")
    beta2: float = Field(default=0.999, ge=0, lt=1, description="adam: β₂.")
    eps: float = Field(default=1e-8, gt=0, le=1, description="adam: ε.")

    @model_validator(mode="after")
    def _fields_fit_the_name(self) -> OptimizerSpec:
        own = {"gd": set(), "sgd": {"momentum", "nesterov"}, "adam": {"beta1", "beta2", "eps"}}
        # a stored spec carries every field at its default: only a changed one is stray
        stray = sorted(
            f
            for f in self.model_fields_set - own[self.name] - {"name"}
            if getattr(self, f) != type(self).model_fields[f].default
        )
        if stray:
            fit = ", ".join(sorted(own[self.name])) or "no other field"
            raise ValueError(
                f"{', '.join(stray)}: not a setting of optimizer {self.name!r} (it takes {fit})"
            )
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self


class TrajectorySpec(BaseModel):
    """Checkpoints in training order on one dataset. All must share parameter names and shapes
    (their eigenvectors are compared coordinate by coordinate)."""

    model_config = ConfigDict(extra="forbid")

    checkpoints: list[TrajectoryCheckpoint] = Field(min_length=2, max_length=200)
    dataset: DatasetRef
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    output_key: str | None = OUTPUT_KEY
    class_dim: Literal[1, -1] | None = CLASS_DIM
    mode: Literal["eval", "train"] = "eval"
    k: int = Field(
        default=3, ge=1, le=20, description="Top eigenvectors compared between checkpoints."
    )
    tol: float | None = Field(
        default=None,
        gt=0,
        le=0.1,
        description="Relative Ritz residual bound per eigenpair; eigenvector errors are about "
        "tol·λ/gap, so keep it well below the relative gaps between the top k+1 eigenvalues. "
        "Default: as tight as the model's dtype allows (the products' rounding level for "
        "float32, 1e-10 for float64).",
    )
    max_iter: int = Field(default=400, ge=2, le=10_000, description="Lanczos steps per checkpoint.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)
    optimizer: OptimizerSpec = Field(
        default_factory=OptimizerSpec,
        description="The optimizer of the run, which sets the edge of stability: gd (default), "
        "sgd with momentum (and nesterov), or adam (needs each checkpoint's optimizer_state).",
    )

    @model_validator(mode="after")
    def _adam_needs_states(self) -> TrajectorySpec:
        if self.optimizer.name == "adam":
            for i, c in enumerate(self.checkpoints):
                if c.optimizer_state is None:
                    raise ValueError(
                        f"checkpoints[{i}].optimizer_state: optimizer 'adam' needs every "
                        "checkpoint's optimizer state (its preconditioner); upload it with "
                        "POST /v1/trajectories/optimizer-states"
                    )
        else:
            given = [i for i, c in enumerate(self.checkpoints) if c.optimizer_state is not None]
            if given:
                raise ValueError(
                    f"checkpoints[{given[0]}].optimizer_state: only optimizer 'adam' uses an "
                    f"optimizer state, this trajectory's optimizer is {self.optimizer.name!r}"
                )
        return self

    @field_validator("checkpoints")
    @classmethod
    def _steps_increase(cls, checkpoints: list[TrajectoryCheckpoint]) -> list[TrajectoryCheckpoint]:
        last: tuple[int, int] | None = None
        for i, c in enumerate(checkpoints):
            if c.step is None:
                continue
            if last is not None and c.step <= last[1]:
                raise ValueError(
                    f"checkpoints[{i}].step: {c.step} does not follow checkpoints[{last[0]}].step "
                    f"{last[1]}; list the checkpoints in training order"
                )
            last = (i, c.step)
        return checkpoints


class TrajectoryPoint(BaseModel):
    """What one checkpoint measured."""

    index: int
    model: str
    step: int | None = None
    learning_rate: float
    lambda_max: float = Field(description="Largest Hessian eigenvalue.")
    eigenvalues: list[float] = Field(
        description="Top-k eigenvalues, descending: of H, or of P⁻¹H for optimizer 'adam'."
    )
    optimizer: Literal["gd", "sgd", "adam"] = Field(
        default="gd", description="The optimizer whose edge applies."
    )
    preconditioned_lambda_max: float | None = Field(
        default=None, description="adam: λmax(P⁻¹H), P from the checkpoint's optimizer state."
    )
    stability_quantity: Literal["lambda_max", "preconditioned_lambda_max"] = Field(
        default="lambda_max", description="The sharpness compared with the threshold."
    )
    stability_threshold: float | None = Field(
        default=None,
        description="The edge: 2/η (gd), (2+2β)/η (sgd), (2+2β)/((1+2β)η) (Nesterov), "
        "(2+2β₁)/((1−β₁)η) on λmax(P⁻¹H) (adam).",
    )
    stability_ratio: float = Field(
        description="stability_quantity / stability_threshold (λmax·η/2 for gd): above 1 the "
        "checkpoint is beyond the edge of stability of its optimizer."
    )
    beyond_edge: bool = Field(description="stability_ratio > 1.")
    mode: Literal["eval", "train"] | None = Field(
        default=None, description="The mode the model was measured in."
    )
    mode_reason: str | None = Field(
        default=None, description="Why that mode, and what it means for this model."
    )
    residual_bounds: list[float] = Field(description="Ritz residual bound per eigenvalue.")
    converged: bool = Field(
        description="Every eigenpair's error estimate is within tol or within a small multiple "
        "of the products' rounding level (limited_by says which)."
    )
    limited_by: str | None = Field(
        default=None,
        description="Why Lanczos stopped: 'tolerance' or '<dtype> rounding' (converged), or "
        "the budget that stopped it ('iteration budget': raise max_iter).",
    )
    iterations: int
    hvps: int
    seconds: float
    dim: int = Field(description="Number of parameters.")
    loss: float | None = Field(default=None, description="Mean loss on the dataset.")
    accuracy: float | None = None
    warnings: list[str] = Field(default_factory=list)


class EigenvectorOverlap(BaseModel):
    """How far the top eigenvectors turned between checkpoints `start` and `end` (= start+1)."""

    start: int
    end: int
    top_overlap: float = Field(description="|⟨v₁(start), v₁(end)⟩| ∈ [0, 1]; 1: no rotation.")
    subspace_overlap: float = Field(
        description="‖V_startᵀ V_end‖²_F / k ∈ [0, 1]: mean cos² of the principal angles "
        "between the top-k eigenspaces; invariant to signs and order of the eigenvectors."
    )
    principal_cosines: list[float] = Field(
        description="cos of the principal angles between the two top-k subspaces, descending."
    )


class Trajectory(RunRecord):
    spec: TrajectorySpec
    progress: list[MeasureProgress] = Field(
        default_factory=list, description="One entry per checkpoint, in order."
    )
    points: list[TrajectoryPoint] = Field(
        default_factory=list, description="Results of the checkpoints measured so far, in order."
    )
    overlaps: list[EigenvectorOverlap] = Field(
        default_factory=list, description="One entry per consecutive pair measured so far."
    )

    edge_analysis: dict[str, Any] = Field(
        default_factory=dict,
        description="Overlaps of the steps that start beyond the edge of stability, apart from "
        "those that start below it (count, mean, median, min; a summary in words). Computed "
        "from points and overlaps whenever the record is read.",
    )

    @model_validator(mode="after")
    def _edge_analysis(self) -> Trajectory:
        self.edge_analysis = edge_split(
            [p.stability_ratio for p in self.points], [o.model_dump() for o in self.overlaps]
        )
        return self


class TrajectoryPage(BaseModel):
    items: list[Trajectory]
    next_cursor: str | None = None

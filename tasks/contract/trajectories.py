"""A trajectory: an ordered list of checkpoints of one training run, each measured for λmax and
its top-k Hessian eigenvectors; between consecutive checkpoints, how far those eigenvectors
turned (Wang & Roberts 2024). A resource of its own (/v1/trajectories), run by its own task."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.contract.edge_analysis import edge_split
from tasks.contract.inputs import (
    CLASS_DIM,
    MODEL_ID_PATTERN,
    OUTPUT_KEY,
    PRECISION,
    DatasetRef,
    Precision,
)
from tasks.contract.runs import MeasureProgress, RunRecord


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
    precision: Precision = PRECISION
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
    precision: dict[str, str] | None = Field(
        default=None,
        description="The dtype the spec asked for, the checkpoint's own and the one its "
        "products were computed in: {asked, model_dtype, products_dtype}.",
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

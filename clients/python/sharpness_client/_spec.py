"""Building a JobSpec or a TrajectorySpec from the loose arguments people write: the one place
the SDK and the CLI give a spec its shape.

`measures=["lambda_max", "trace"]` with `params={"trace": {"num_hvps": 200}}`, or
`MeasureRequest`s, or dicts; `model=` an id or an upload's info; `dataset=` an id, an info, a
URI or a full DatasetRef. `eval_dataset=` (held-out data) takes the same forms as `dataset=`,
`initial_model=` (w₀) the same as `model=`. A trajectory's checkpoints are `(model,
learning_rate[, step])`, mappings or TrajectoryCheckpoints, its optimizer a name, a mapping or
an OptimizerSpec. Checking names and bounds is the server's job (it knows the registry and
answers 422 naming the field); this only gives the spec its shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sharpness_client.types import (
    DatasetInfo,
    DatasetRef,
    JobSpec,
    MeasureRequest,
    ModelInfo,
    OptimizerSpec,
    TrajectoryCheckpoint,
    TrajectorySpec,
)

MeasureLike = str | MeasureRequest | Mapping[str, Any]
DatasetLike = str | DatasetInfo | DatasetRef | Mapping[str, Any]


def is_uri(value: str) -> bool:
    return "://" in value


def model_id(model: str | ModelInfo) -> str:
    return model.id if isinstance(model, ModelInfo) else model


def dataset_ref(dataset: DatasetLike, **options: Any) -> DatasetRef:
    """`options` (batch_size, max_samples, inputs_key, targets_key) left None are not set."""
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(dataset, DatasetRef):
        return dataset.model_copy(update=options)
    if isinstance(dataset, Mapping):
        return DatasetRef.model_validate({**dataset, **options})
    if isinstance(dataset, DatasetInfo):
        keys = {"inputs_key": dataset.inputs_key, "targets_key": dataset.targets_key}
        return DatasetRef(id=dataset.id, **{**keys, **options})
    if is_uri(dataset):
        return DatasetRef(uri=dataset, **options)
    return DatasetRef(id=dataset, **options)


def measure_requests(
    measures: Iterable[MeasureLike], params: Mapping[str, Mapping[str, Any]] | None = None
) -> list[MeasureRequest]:
    params = dict(params or {})
    out: list[MeasureRequest] = []
    for m in [measures] if isinstance(measures, str) else measures:
        if isinstance(m, str):
            req = MeasureRequest(name=m)
        elif isinstance(m, MeasureRequest):
            req = m.model_copy(deep=True)
        else:
            req = MeasureRequest.model_validate(dict(m))
        extra = params.pop(req.name, {})
        if extra:
            req.params = {**req.params, **extra}
        out.append(req)
    if params:
        raise ValueError(f"params given for measures not requested: {', '.join(sorted(params))}")
    return out


def given(**fields: Any) -> dict[str, Any]:
    """The fields that are not None. Only those are set on a spec, so a request built from it
    (sent with `exclude_unset`) leaves every other field to the server's defaults."""
    return {k: v for k, v in fields.items() if v is not None}


def build_spec(
    model: str | ModelInfo,
    dataset: DatasetLike,
    measures: Iterable[MeasureLike],
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int | None = None,
    max_samples: int | None = None,
    eval_dataset: DatasetLike | None = None,
    initial_model: str | ModelInfo | None = None,
    labels: Mapping[str, str] | None = None,
    loss: str | None = None,
    mode: str | None = None,
    device: str | None = None,
    output_key: str | None = None,
    class_dim: int | None = None,
    data_parallel: int | None = None,
    dropout_seed: int | None = None,
) -> JobSpec:
    """The job spec of `jobs.create`. `batch_size` applies to both datasets; `max_samples` to
    the training data only."""
    fields = given(loss=loss, mode=mode, device=device, output_key=output_key, class_dim=class_dim)
    fields.update(given(data_parallel=data_parallel, labels=dict(labels) if labels else None))
    fields.update(given(dropout_seed=dropout_seed))
    if eval_dataset is not None:
        fields["eval_dataset"] = dataset_ref(eval_dataset, batch_size=batch_size)
    if initial_model is not None:
        fields["initial_model"] = model_id(initial_model)
    return JobSpec(
        model=model_id(model),
        dataset=dataset_ref(dataset, batch_size=batch_size, max_samples=max_samples),
        measures=measure_requests(measures, params),
        **fields,
    )


CheckpointLike = (
    TrajectoryCheckpoint
    | Mapping[str, Any]
    | tuple[str | ModelInfo, float]
    | tuple[str | ModelInfo, float, int | None]
)
OptimizerLike = OptimizerSpec | Mapping[str, Any] | str


def checkpoint(c: CheckpointLike) -> TrajectoryCheckpoint:
    """(model, learning_rate[, step]), a mapping, or a TrajectoryCheckpoint."""
    if isinstance(c, TrajectoryCheckpoint):
        return c
    if isinstance(c, Mapping):
        return TrajectoryCheckpoint.model_validate(dict(c))
    model, lr, *rest = c
    step = rest[0] if rest else None
    return TrajectoryCheckpoint(model=model_id(model), learning_rate=lr, step=step)


def optimizer_spec(o: OptimizerLike) -> OptimizerSpec:
    """ "sgd", {"name": "sgd", "momentum": 0.9} or an OptimizerSpec."""
    if isinstance(o, OptimizerSpec):
        return o
    if isinstance(o, str):
        return OptimizerSpec(name=o)  # type: ignore[arg-type]
    return OptimizerSpec.model_validate(dict(o))


def build_trajectory_spec(
    checkpoints: Iterable[CheckpointLike],
    dataset: DatasetLike,
    *,
    optimizer: OptimizerLike | None = None,
    batch_size: int | None = None,
    max_samples: int | None = None,
    labels: Mapping[str, str] | None = None,
    **fields: Any,
) -> TrajectorySpec:
    """The trajectory spec of `trajectories.create`; `fields` (k, tol, max_iter, loss, mode,
    device) left None are not set. No optimizer: not sent (the server's gd)."""
    return TrajectorySpec(
        checkpoints=[checkpoint(c) for c in checkpoints],
        dataset=dataset_ref(dataset, batch_size=batch_size, max_samples=max_samples),
        **given(
            optimizer=None if optimizer is None else optimizer_spec(optimizer),
            labels=dict(labels) if labels else None,
            **fields,
        ),
    )

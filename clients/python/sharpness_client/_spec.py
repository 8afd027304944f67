"""Building a JobSpec from the loose arguments people write.

`measures=["lambda_max", "trace"]` with `params={"trace": {"num_hvps": 200}}`, or
`MeasureRequest`s, or dicts; `model=` an id or an upload's info; `dataset=` an id, an info, a
URI or a full DatasetRef. `eval_dataset=` (held-out data) takes the same forms as `dataset=`,
`initial_model=` (w₀) the same as `model=`. Checking names and bounds is the server's job (it
knows the registry and answers 422 naming the field); this only gives the spec its shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sharpness_client.types import DatasetInfo, DatasetRef, JobSpec, MeasureRequest, ModelInfo

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


def build_spec(
    model: str | ModelInfo,
    dataset: DatasetLike,
    measures: Iterable[MeasureLike],
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    loss: str | None = None,
    mode: str | None = None,
    device: str | None = None,
    labels: Mapping[str, str] | None = None,
    batch_size: int | None = None,
    max_samples: int | None = None,
    eval_dataset: DatasetLike | None = None,
    initial_model: str | ModelInfo | None = None,
    output_key: str | None = None,
    class_dim: int | None = None,
) -> JobSpec:
    """`batch_size` applies to both datasets; `max_samples` to the training data only. Only
    the arguments given are set on the spec, so a request built from it (sent with
    `exclude_unset`) leaves every other field to the server's defaults."""
    fields: dict[str, Any] = {
        "model": model_id(model),
        "dataset": dataset_ref(dataset, batch_size=batch_size, max_samples=max_samples),
        "measures": measure_requests(measures, params),
    }
    if labels:
        fields["labels"] = dict(labels)
    if eval_dataset is not None:
        fields["eval_dataset"] = dataset_ref(eval_dataset, batch_size=batch_size)
    if initial_model is not None:
        fields["initial_model"] = model_id(initial_model)
    named = (("loss", loss), ("mode", mode), ("device", device))
    for key, value in (*named, ("output_key", output_key), ("class_dim", class_dim)):
        if value is not None:
            fields[key] = value
    return JobSpec.model_validate(fields)

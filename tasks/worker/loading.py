"""What every run loads from the blob store, shared by jobs (tasks.worker.job), trajectories
(tasks.worker.trajectory_job) and the data-parallel ranks (tasks.worker.parallel): the model,
the dataset (checked against the model and its loss), the HessianProblem over both, and a
job's initial model (w₀) and optimizer state.

Every problem is a LoadError whose detail names the request field at fault (`dataset.uri`,
`initial_model`, `optimizer_state`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from safetensors import SafetensorError
from safetensors.torch import load_file

from tasks.artifacts.uris import open_uri
from tasks.contract.spec import DatasetRef, Job
from tasks.engine.initial import InitialParamsMismatch, check_initial_params
from tasks.engine.precision import cast_floating, dtype_name, floating_dtype, products_dtype
from tasks.engine.problem import HessianProblem
from tasks.settings import Settings
from tasks.store.blobs import BlobStore
from tasks.worker.datasets import load_dataset, probe, unused_inputs_note
from tasks.worker.errors import STOPS, LoadError, at
from tasks.worker.loaders import LoadedModel, load_model


class Stored(Protocol):
    """Where a run reads what was uploaded: a WorkerRuntime, or a data-parallel rank's."""

    settings: Settings
    blobs: BlobStore


def dataset_path(
    rt: Stored, ref: DatasetRef, field: str = "dataset"
) -> tuple[Path, dict[str, Any] | None]:
    """Where dataset `ref` lies, and its stored metadata (None for a URI); `field` names it."""
    if ref.id is not None:
        meta = rt.blobs.meta("datasets", ref.id)
        if meta is None:
            raise LoadError("Dataset not found", f"dataset {ref.id} is not in the blob store")
        return rt.blobs.path("datasets", ref.id), meta
    try:
        return Path(open_uri(ref.uri or "", rt.settings)), None
    except STOPS:
        raise
    except Exception as e:
        raise LoadError("Dataset URI refused", f"{field}.uri {ref.uri!r}: {e}") from e


def stored_model(rt: Stored, model_id: str) -> LoadedModel | None:
    """Model `model_id` from the blob store, loaded safely (None when it is not stored)."""
    meta = rt.blobs.meta("models", model_id)
    if meta is None:
        return None
    return load_model(rt.blobs.path("models", model_id), meta, rt.settings)


def load_job_model(rt: Stored, job: Job) -> LoadedModel:
    """The job's model, loaded safely in the dtype its file holds, then cast to the dtype of
    the job's `precision` (`apply_precision`)."""
    model = stored_model(rt, job.spec.model)
    if model is None:
        raise LoadError("Model not found", f"model {job.spec.model} is not in the blob store")
    return apply_precision(model, job.spec.precision)


def apply_precision(model: LoadedModel, asked: str = "auto") -> LoadedModel:
    """Cast the model's floating parameters and buffers to the products' dtype of `asked`
    (tasks.engine.precision.products_dtype: "auto" takes float16 and bfloat16 models to
    float32), and record what was done in `model.precision`. Everything read afterwards
    follows: the datasets' floating inputs are read in `model.dtype`, and the HessianProblem
    (its `dtype`, hence every rounding floor) is the cast module's."""
    before = floating_dtype(model.module) or model.dtype
    target = products_dtype(before, asked)
    cast_floating(model.module, target)
    model.precision = {
        "asked": asked,
        "model_dtype": dtype_name(before),
        "products_dtype": dtype_name(target),
    }
    return model


def cast_note(model: LoadedModel) -> str:
    """What to say of a cast when the cast model then fails on its data ("" without one)."""
    p = model.precision
    if not p or p["model_dtype"] == p["products_dtype"]:
        return ""
    return (
        f"; the model was cast from {p['model_dtype']} to {p['products_dtype']} (precision "
        f"{p['asked']!r}): if it computes in its own dtype only, set precision 'model'"
    )


def read_dataset(rt: Stored, spec: Any, ref: DatasetRef, field: str, dtype: Any) -> tuple[Any, str]:
    """(batches, file name) of dataset `ref` in `dtype`, with the loss of `spec` (a job's or
    a trajectory's)."""
    data_path, data_meta = dataset_path(rt, ref, field)
    batches = load_dataset(
        data_path,
        data_meta,
        inputs_key=ref.inputs_key,
        targets_key=ref.targets_key,
        max_samples=ref.max_samples,
        batch_size=ref.batch_size,
        loss=spec.loss,
        dtype=dtype,
    )
    return batches, (data_meta or {}).get("filename") or data_path.name


def check_fit(spec: Any, model: LoadedModel, batches: Any, name: str) -> None:
    """One forward pass of the first batch: the data fits the model and its loss."""
    probe(model, batches, name, spec.loss, spec.output_key, spec.class_dim)


def load_batches(rt: Stored, job: Job, model: LoadedModel, ref: DatasetRef, field: str) -> Any:
    """Read dataset `ref` in the model's dtype and check one forward pass fits the model."""
    batches, name = read_dataset(rt, job.spec, ref, field, model.dtype)
    try:
        check_fit(job.spec, model, batches, name)
    except LoadError as e:
        note = cast_note(model)
        if not note:
            raise
        raise type(e)(e.title, e.detail + note, e.status, e.kind) from e
    return batches


def make_problem(spec: Any, module: Any, batches: Any, device: str) -> HessianProblem:
    """The HessianProblem of the spec's (a job's or a trajectory's) loss, mode and output
    layout over `batches`."""
    return HessianProblem(
        module,
        batches,
        loss=spec.loss,
        mode=spec.mode,
        device=device,
        output_key=spec.output_key,
        class_dim=spec.class_dim,
        dropout_seed=getattr(spec, "dropout_seed", 0),  # a trajectory's spec has none
    )


def build_problem(
    rt: Stored, job: Job, device: str, model: LoadedModel
) -> tuple[HessianProblem, str | None]:
    """Load the data, check it fits the model, and make the HessianProblem; with it, what the
    job must say about the data (an input the given names leave out), or None."""
    batches = load_batches(rt, job, model, job.spec.dataset, "dataset")
    note = unused_inputs_note(model, batches)
    return make_problem(job.spec, model.module, batches, device), note


def load_initial_params(rt: Stored, job: Job, module: Any) -> dict[str, Any] | None:
    """w₀ from `initial_model` by parameter name, checked against the model (None without)."""
    model_id = job.spec.initial_model
    if model_id is None:
        return None
    try:
        loaded = stored_model(rt, model_id)
    except LoadError as e:
        raise at("initial_model", e) from e
    if loaded is None:
        raise LoadError(
            "Initial model not found", f"initial_model: model {model_id} is not in the blob store"
        )
    dtype = floating_dtype(module)  # w₀ in the dtype the model is measured in
    initial = {
        n: p.detach().to(dtype) if dtype is not None and p.is_floating_point() else p.detach()
        for n, p in loaded.module.named_parameters()
    }
    try:
        check_initial_params(module, initial)
    except InitialParamsMismatch as e:
        raise LoadError(
            "Initial model does not fit the model",
            f"initial_model: {e}; upload a checkpoint of the same architecture, saved the "
            "same way as the model",
        ) from e
    return initial


def load_optimizer_state(rt: Stored, job: Job) -> dict[str, Any] | None:
    """Adam's state tensors from `optimizer_state` (None without), for
    preconditioned_lambda_max; their fit to the model is checked by the measure."""
    state_id = job.spec.optimizer_state
    if state_id is None:
        return None
    if rt.blobs.meta("optimizer_states", state_id) is None:
        raise LoadError(
            "Optimizer state not found", f"optimizer_state: {state_id} is not in the blob store"
        )
    try:
        return load_file(str(rt.blobs.path("optimizer_states", state_id)))
    except (SafetensorError, OSError) as e:
        raise LoadError("Unreadable optimizer state", f"optimizer_state: {e}") from e

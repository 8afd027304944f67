"""Check what a job spec names before it is queued: the model, the dataset or its URI.

A job naming a missing model, a deleted dataset, an absent array or a refused URI would only
fail in a worker minutes later; here it is a 422 naming the field (`model`, `dataset.id`,
`dataset.uri`, `dataset.inputs_key`). The held-out `eval_dataset` is checked exactly as the
dataset is (`eval_dataset.id`, ...), and `initial_model` as the model.
"""

from __future__ import annotations

from pathlib import Path

from service.blobs.formats import Refused
from service.blobs.formats.datasets import check_arrays, inspect_dataset, resolve_names
from service.problems import invalid
from service.tenants.holdings import HeldBlobs
from tasks.artifacts.uris import UriRejected, check_uri, open_uri
from tasks.contract.spec import DatasetRef, JobSpec
from tasks.settings import Settings
from tasks.store.blobs import BlobStore


def check(spec: JobSpec, blobs: BlobStore | HeldBlobs, settings: Settings) -> None:
    _check_model(spec.model, "model", blobs)
    _check_dataset(spec.dataset, "dataset", blobs, settings)
    if spec.eval_dataset is not None:
        _check_dataset(spec.eval_dataset, "eval_dataset", blobs, settings)
    if spec.initial_model is not None:
        _check_model(spec.initial_model, "initial_model", blobs)
    if (
        spec.optimizer_state is not None
        and blobs.meta("optimizer_states", spec.optimizer_state) is None
    ):
        raise invalid(
            "optimizer_state",
            f"no uploaded optimizer state {spec.optimizer_state}; upload it with POST "
            "/v1/trajectories/optimizer-states",
            "unknown",
        )


def _check_model(model_id: str, field: str, blobs: BlobStore | HeldBlobs) -> None:
    if blobs.meta("models", model_id) is None:
        raise invalid(
            field, f"no uploaded model {model_id}; upload it with POST /v1/models", "unknown"
        )


def _check_dataset(
    ref: DatasetRef, field: str, blobs: BlobStore | HeldBlobs, settings: Settings
) -> None:
    """One dataset reference, errors naming `field` (dataset or eval_dataset) and its part."""
    if ref.id is not None:
        meta = blobs.meta("datasets", ref.id)
        if meta is None:
            raise invalid(
                f"{field}.id",
                f"no uploaded dataset {ref.id}; upload it with POST /v1/datasets",
                "unknown",
            )
        _check_names(meta.get("arrays", {}), f"dataset {ref.id}", ref, field, meta)
        return
    assert ref.uri is not None  # the spec requires exactly one of id and uri
    try:
        check_uri(ref.uri, settings)
        if ref.uri.lower().startswith("file:"):  # local: read its headers now
            path: Path = open_uri(ref.uri, settings)
            inspect_dataset(
                path, f"file {ref.uri}", ref.inputs_key, ref.targets_key, 4 * settings.max_uri_bytes
            )
    except UriRejected as e:
        raise invalid(f"{field}.uri", e.detail, "uri-rejected") from e
    except Refused as e:
        raise invalid(f"{field}.uri", e.detail, "bad-dataset") from e


def _check_names(arrays: dict, label: str, ref: DatasetRef, field: str, meta: dict) -> None:
    """The names the job will use exist in the uploaded file and agree in length."""
    try:
        inputs_key, targets_key = resolve_names(
            arrays, label, ref.inputs_key, ref.targets_key, meta
        )
        check_arrays(arrays, label, inputs_key, targets_key)
    except Refused as e:
        raise invalid(f"{field}.{e.field}" if e.field else field, e.detail, e.slug) from e

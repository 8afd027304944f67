"""Check what a job spec names before it is queued: the model, the dataset or its URI.

A job naming a missing model, a deleted dataset, an absent array or a refused URI would only
fail in a worker minutes later; here it is a 422 naming the field (`model`, `dataset.id`,
`dataset.uri`, `dataset.inputs_key`).
"""

from __future__ import annotations

from pathlib import Path

from service.formats import Refused
from service.formats.datasets import check_arrays, inspect_dataset
from service.problems import invalid
from tasks.blobstore import BlobStore
from tasks.settings import Settings
from tasks.spec import JobSpec
from tasks.uris import UriRejected, check_uri, open_uri


def check(spec: JobSpec, blobs: BlobStore, settings: Settings) -> None:
    if blobs.meta("models", spec.model) is None:
        raise invalid(
            "model", f"no uploaded model {spec.model}; upload it with POST /v1/models", "unknown"
        )
    ref = spec.dataset
    if ref.id is not None:
        meta = blobs.meta("datasets", ref.id)
        if meta is None:
            raise invalid(
                "dataset.id",
                f"no uploaded dataset {ref.id}; upload it with POST /v1/datasets",
                "unknown",
            )
        _check_keys(meta.get("arrays", {}), f"dataset {ref.id}", ref.inputs_key, ref.targets_key)
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
        raise invalid("dataset.uri", e.detail, "uri-rejected") from e
    except Refused as e:
        raise invalid("dataset.uri", e.detail, "bad-dataset") from e


def _check_keys(arrays: dict, label: str, inputs_key: str, targets_key: str) -> None:
    known = ", ".join(sorted(arrays)) or "none"
    for field, key in (("dataset.inputs_key", inputs_key), ("dataset.targets_key", targets_key)):
        if key not in arrays:
            raise invalid(field, f"{label} has no array {key!r} (arrays: {known})", "missing-array")
    try:
        check_arrays(arrays, label, inputs_key, targets_key)
    except Refused as e:
        raise invalid("dataset", e.detail, e.slug) from e

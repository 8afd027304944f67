"""Models registered by reference: `POST /v1/models` with a JSON body naming a URI that the
workers read (tasks.artifacts.model_refs), instead of a multipart upload of the bytes.

The reference is checked here as an upload is: the URI rules (tasks.artifacts.uris), then for
a file: URI the files themselves, read through their headers only (the model file by the
upload's inspector; each shard's safetensors header; config.json; the index against its
shards). An http(s) reference is checked without connecting, as a dataset URI is at
submission: the worker fetches and checks it when a job loads it. Every refusal is a problem
naming `uri` (or the field at fault).

What is stored is the reference, not the weights: a small JSON blob of the URI and its fields,
whose sha256 is the model's id (the same reference registered again is the same model). It
counts its own few hundred bytes against the tenant's storage quota; the weights stay where
the URI points. The worker reads whatever is there when a job runs, checked again.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.blobs.formats import Refused
from service.blobs.formats import safetensors as st
from service.blobs.formats.models import inspect_model
from service.blobs.schemas import ModelReference
from service.deps import Uploader
from service.problems import ProblemError, field_error, invalid
from tasks.artifacts import formats, model_refs, uris
from tasks.artifacts import hf_checkpoint as hf
from tasks.store.blobs import Staged

MAX_BODY_BYTES = 256 * 1024
FIELD = model_refs.FIELD


async def read_reference(request: Request) -> ModelReference:
    """The JSON body as a ModelReference; a 422 naming the field that does not fit."""
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > MAX_BODY_BYTES:
            raise invalid("body", f"a model reference is at most {MAX_BODY_BYTES} bytes of JSON")
    try:
        return ModelReference.model_validate_json(bytes(raw))
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
        raise RequestValidationError(errors, body=bytes(raw).decode("utf-8", "replace")) from e


def _refusal(e: uris.UriRejected | hf.BadCheckpoint | Refused) -> ProblemError:
    if isinstance(e, uris.UriRejected):
        return invalid(FIELD, e.detail, "uri-rejected")
    detail = f"{FIELD}: {e.detail}"
    return ProblemError(e.status, e.slug, detail, errors=[field_error(FIELD, e.detail)])


def inspect_reference(ref: ModelReference, settings: Any) -> dict[str, Any]:
    """The facts an upload's inspection gives (format, tensors, parameters, config), plus the
    reference's layout and, for a local one, the size of its files. Blocking: file reads."""
    try:
        layout = model_refs.check_reference(ref.uri, settings)
        if uris.scheme_of(ref.uri, settings) != "file":
            return {"layout": layout, **_remote_facts(layout, ref)}
        ckpt = model_refs.locate(ref.uri, settings)
        label = f"{FIELD} {ref.uri}"
        if ckpt.layout == model_refs.FILE:
            facts = inspect_model(ckpt.path, label, 4 * settings.max_uri_bytes)
        else:
            facts = _sharded_facts(ckpt, label)
        return {**facts, "layout": ckpt.layout, "referenced_bytes": ckpt.size}
    except (uris.UriRejected, hf.BadCheckpoint, Refused) as e:
        raise _refusal(e) from e


def _remote_facts(layout: str, ref: ModelReference) -> dict[str, Any]:
    """What an http(s) reference is, read from its form alone (the worker checks the files)."""
    if layout == model_refs.FOLDER:
        return {"format": formats.HUGGINGFACE}
    low = ref.uri.lower().split("?", 1)[0]
    if layout == model_refs.SHARDED or low.endswith(".safetensors"):
        return {"format": formats.SAFETENSORS}
    if low.endswith(".zip"):
        return {"format": formats.HUGGINGFACE}
    return {"format": formats.TORCH_EXPORT if low.endswith(".pt2") else formats.TORCHSCRIPT}


def _sharded_facts(ckpt: model_refs.Checkpoint, label: str) -> dict[str, Any]:
    """Every shard's safetensors header (whole, no overlaps), the index against them, and
    config.json for a folder."""
    tensors: dict[str, dict[str, Any]] = {}
    by_shard: dict[str, set[str]] = {}
    for shard in ckpt.weights:
        header = st.read_header(shard, f"{label}: {shard.name}")
        by_shard[shard.name] = set(header)
        tensors.update(header)
    if ckpt.index is not None:
        model_refs.check_index(ckpt, by_shard, label)
    if not tensors:
        raise Refused(422, "empty", f"{label}: the safetensors hold no tensors", FIELD)
    facts: dict[str, Any] = {
        "format": formats.SAFETENSORS,
        "tensors": len(tensors),
        "parameters": sum(math.prod(t["shape"]) for t in tensors.values()),
    }
    if ckpt.config is not None:
        facts["format"] = formats.HUGGINGFACE
        facts["config"] = hf.parse_config(ckpt.config.read_bytes(), label, FIELD)
    return facts


def descriptor(ref: ModelReference) -> bytes:
    """The stored blob of a reference: its URI and fields as canonical JSON."""
    return json.dumps(ref.model_dump(exclude_none=True), sort_keys=True).encode()


def fields_of(ref: ModelReference) -> dict[str, str]:
    """The reference's fields as an upload's form fields (tasks of service.blobs.models)."""
    out: dict[str, str] = {}
    if ref.architecture is not None:
        out["architecture"] = ref.architecture
    if ref.config is not None:
        out["config"] = json.dumps(ref.config)
    if ref.head is not None:
        out["head"] = ref.head
    return out


async def stage(uploader: Uploader, ref: ModelReference) -> Staged:
    """The reference's descriptor staged as a model blob (committed by the caller)."""
    blob = descriptor(ref)

    async def chunks() -> AsyncIterator[bytes]:
        yield blob

    return await uploader.blobs.stage_stream("models", chunks(), len(blob))


async def inspect(ref: ModelReference, settings: Any) -> dict[str, Any]:
    return await anyio.to_thread.run_sync(inspect_reference, ref, settings)


def label_of(ref: ModelReference) -> str:
    return f"{FIELD} {ref.uri}"


def filename_of(ref: ModelReference) -> str | None:
    name = Path(ref.uri.split("?", 1)[0].rstrip("/")).name
    return name or None

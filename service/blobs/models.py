"""Model uploads: torch.export, TorchScript, safetensors (with an architecture) or a Hugging
Face checkpoint, told by content."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response

from service.blobs import holding, model_uris, uploads
from service.blobs.formats import Refused
from service.blobs.formats.models import hf_from_fields, inspect_model
from service.blobs.routes import add_list_and_delete
from service.blobs.schemas import ModelInfo, ModelPage, ModelReference
from service.common import ExistingModel, problems
from service.deps import (
    CallerDep,
    OwnersDep,
    UploaderDep,
)
from service.problems import ProblemError, invalid
from tasks.artifacts import formats, model_refs
from tasks.artifacts import hf_checkpoint as hf

router = APIRouter(prefix="/v1/models", tags=["models"])

KIND = "models"

UPLOAD_DOC = """Multipart form: `file` (required); for safetensors weights of a built-in
architecture, `architecture` (its name) and `config` (a JSON object of its keyword arguments).

A Hugging Face `transformers` model is uploaded as the folder `save_pretrained` writes: either
`file` = a zip of the folder (config.json and model.safetensors, or the shards with
model.safetensors.index.json), or `file` = model.safetensors with `config` = the text of
config.json. The worker builds the model with transformers' own class for the config's
`model_type` and the head named by `architectures` or by the optional `head` field
(sequence_classification, token_classification, causal_lm, masked_lm, image_classification,
seq2seq_lm).
Code that comes with a checkpoint is never run: a config with `auto_map` and pickled weights
(.bin) are refused.

The format is told from the bytes, never by unpickling: a torch.export archive (.pt2), a
TorchScript archive, safetensors, or a zipped Hugging Face folder. A pickle, torch.save of a
module or state_dict, a corrupt or truncated file is refused (415 for a format not accepted,
422 for broken content) with a message saying how to export instead. A torch.export program
whose batch size was fixed at export is refused (422) with the fix: `dynamic_shapes` with
`torch.export.Dim("batch")`.

Idempotent by content: the id is the sha256 of the bytes. **201** when the bytes are new,
**200** with the stored record when they were uploaded before; **409** if they were uploaded
before with a different architecture, config or head.

**By reference** (`Content-Type: application/json`, a ModelReference): `{"uri":
"file:///data/llama/"}` registers a model the workers read from the URI instead of uploaded
bytes: a model file, a sharded checkpoint's model.safetensors.index.json, or a save_pretrained
folder (config.json with model.safetensors or its shards), under SHARPNESS_DATA_ROOT
(file:) or over http(s) where SHARPNESS_URI_SCHEMES allows it, with the outbound address
rules of dataset URIs. A file: reference is checked now as an upload is (formats, safetensors
headers, the index against its shards, every file inside the folder); an http(s) one when a
job fetches it. The answer is the same model resource with `source: "uri"`; its id is the
sha256 of the reference, so registering it again is a **200**."""

FIELDS = {"architecture", "config", "head"}
ALREADY_STORED: dict[int | str, dict[str, Any]] = {
    200: {"model": ModelInfo, "description": "Already stored"}
}


def _is_hf_config(raw: str | None) -> bool:
    """A 'config' field that is a Hugging Face config.json (it has a model_type)."""
    try:
        value = json.loads(raw) if raw else None
    except (json.JSONDecodeError, RecursionError):
        return False
    return isinstance(value, dict) and "model_type" in value


def _huggingface_fields(facts: dict[str, Any], fields: dict[str, str], label: str):
    """The record's facts and the fields a later upload of the same bytes must repeat."""
    if fields.get("architecture") is not None:
        raise invalid(
            "architecture",
            "a Hugging Face checkpoint names its model in config.json; leave 'architecture' "
            "out (the optional 'head' field chooses the head)",
        )
    if facts["format"] == formats.SAFETENSORS:  # bare weights, config.json in the 'config' field
        try:
            config = hf_from_fields(fields["config"], f"{label} (config)")
        except Refused as e:
            raise ProblemError(e.status, e.slug, f"config: {e.detail}") from e
        facts = {**facts, "format": formats.HUGGINGFACE, "config": config}
        extra: dict[str, Any] = {"format": formats.HUGGINGFACE, "config": config}
    elif fields.get("config") is not None:
        raise invalid("config", "the checkpoint holds config.json already; leave 'config' out")
    else:
        extra = {}
    try:
        head = hf.head_of(facts["config"], fields.get("head") or None, label)
    except hf.BadCheckpoint as e:
        raise invalid(e.field, e.detail) from e
    return facts, {**extra, "head": head}


def _model_fields(facts: dict[str, Any], fields: dict[str, str], label: str):
    """architecture/config: required (architecture) for safetensors, refused otherwise; a
    Hugging Face checkpoint takes an optional head instead."""
    fmt = facts["format"]
    if fmt == formats.HUGGINGFACE or (
        fmt == formats.SAFETENSORS
        and fields.get("architecture") is None
        and _is_hf_config(fields.get("config"))
    ):
        return _huggingface_fields(facts, fields, label)
    if fields.get("head") is not None:
        raise invalid("head", f"only applies to Hugging Face checkpoints, not {fmt} files")
    arch = fields.get("architecture")
    raw_config = fields.get("config")
    if fmt != formats.SAFETENSORS:
        for name in ("architecture", "config"):
            if fields.get(name) is not None:
                raise invalid(name, f"only applies to safetensors weights, not {fmt} archives")
        return facts, {}
    if arch is None or not arch.strip():
        raise invalid(
            "architecture",
            "safetensors holds weights only; name the architecture to load them into "
            "(form field 'architecture', with its keyword arguments in 'config'), or, for a "
            "Hugging Face model, send its config.json (with its model_type) in 'config'",
        )
    config: dict[str, Any] = {}
    if raw_config is not None and raw_config.strip():
        try:
            config = json.loads(raw_config)
        except (json.JSONDecodeError, RecursionError) as e:
            raise invalid("config", f"not valid JSON: {e}") from e
        if not isinstance(config, dict):
            raise invalid("config", "must be a JSON object of the architecture's arguments")
    return facts, {"architecture": arch.strip(), "config": config}


@router.post(
    "",
    response_model=ModelInfo,
    response_model_exclude_none=True,
    status_code=201,
    summary="Upload a model",
    description=UPLOAD_DOC,
    responses=ALREADY_STORED | problems(400, 409, 413, 415, 422),
    openapi_extra=uploads.multipart_openapi(
        architecture={"type": "string"},
        config={
            "type": "string",
            "description": "JSON object: the architecture's arguments, "
            "or a Hugging Face config.json",
        },
        head={"type": "string", "enum": list(hf.HEADS)},
        json_body=ModelReference,
    ),
)
async def upload_model(
    request: Request,
    response: Response,
    uploader: UploaderDep,
) -> ModelInfo:
    blobs, settings, tenant, owners = uploader
    if _is_json(request):
        return await _register(uploader, response, await model_uris.read_reference(request))
    received = await uploads.receive(request, blobs, KIND, settings.max_upload_bytes, FIELDS)
    facts = await uploads.inspect(blobs, received, inspect_model, 4 * settings.max_upload_bytes)
    try:
        facts, extra = _model_fields(facts, received.fields, received.label)
    except BaseException:
        blobs.discard(received.staged)
        raise
    meta = {"kind": "model", "filename": received.filename, **facts, **extra}
    record, created, fresh = holding.keep(uploader, received.staged, meta)
    if not created and extra and any(record.get(k) != v for k, v in extra.items()):
        if fresh:  # another tenant's model: refused without its architecture, and not held
            owners.release(KIND, record["id"], tenant.name)
            raise ProblemError(
                409,
                "conflict",
                f"{received.label}: these bytes are stored as a model with another "
                "architecture, config or head; a model id names one model",
            )
        stored = ", ".join(f"{k} {record.get(k)!r}" for k in extra if k != "format")
        raise ProblemError(
            409,
            "conflict",
            f"{received.label}: these bytes are stored as model {record['id']} "
            f"({record.get('format')}) with {stored}; a model id names one model",
        )
    response.status_code = 201 if fresh else 200
    return ModelInfo.model_validate(record)


def _is_json(request: Request) -> bool:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return ctype == "application/json" or ctype.endswith("+json")


def _reference_fields(facts: dict[str, Any], ref: ModelReference) -> tuple[dict, dict]:
    """The upload's field rules for a reference; an http(s) checkpoint, whose config.json
    the worker reads, takes only an optional head here."""
    fields, label = model_uris.fields_of(ref), model_uris.label_of(ref)
    if facts["format"] != formats.HUGGINGFACE or "config" in facts:
        return _model_fields(facts, fields, label)
    for name in ("architecture", "config"):
        if name in fields:
            raise invalid(name, "a Hugging Face checkpoint holds its config.json; leave it out")
    if ref.head is not None and ref.head not in hf.HEADS:
        raise invalid("head", f"{ref.head!r} is not one of {', '.join(hf.HEADS)}", "bad-head")
    return facts, ({"head": ref.head} if ref.head else {})


async def _register(uploader: Any, response: Response, ref: ModelReference) -> ModelInfo:
    """Check a reference as an upload is checked, then keep it as the caller's model."""
    facts = await model_uris.inspect(ref, uploader.settings)
    facts, extra = _reference_fields(facts, ref)
    staged = await model_uris.stage(uploader, ref)
    meta = {
        "kind": "model",
        "filename": model_uris.filename_of(ref),
        **facts,
        **extra,
        "source": model_refs.SOURCE,
        "uri": ref.uri,
    }
    record, _, fresh = holding.keep(uploader, staged, meta)
    response.status_code = 201 if fresh else 200
    return ModelInfo.model_validate(record)


@router.get(
    "/{id}",
    response_model=ModelInfo,
    response_model_exclude_none=True,
    responses=problems(404, 422),
)
def get_model(record: ExistingModel, tenant: CallerDep, owners: OwnersDep) -> ModelInfo:
    return ModelInfo.model_validate(holding.seen_by(record, owners, tenant, KIND))


add_list_and_delete(router, KIND, "model", ModelInfo, ModelPage)

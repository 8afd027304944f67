"""Model uploads: torch.export, TorchScript or safetensors (with an architecture), by content."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response

from service import uploads
from service.deps import BlobsDep, SettingsDep
from service.formats.models import inspect_model
from service.problems import ProblemError, invalid
from service.routers.common import BlobId, ExistingModel, not_found, problems
from service.schemas import ModelInfo

router = APIRouter(prefix="/v1/models", tags=["models"])

KIND = "models"

UPLOAD_DOC = """Multipart form: `file` (required), and for safetensors weights `architecture`
(a built-in architecture name) and `config` (a JSON object of its keyword arguments).

The format is told from the bytes, never by unpickling: a torch.export archive (.pt2), a
TorchScript archive, or safetensors. A pickle, torch.save of a module or state_dict, a corrupt
or truncated file is refused (415 for a format not accepted, 422 for broken content) with a
message saying how to export instead.

Idempotent by content: the id is the sha256 of the bytes. **201** when the bytes are new,
**200** with the stored record when they were uploaded before; **409** if they were uploaded
before with a different architecture or config."""


def _model_fields(fmt: str, fields: dict[str, str]) -> dict[str, Any]:
    """architecture/config: required (architecture) for safetensors, refused otherwise."""
    arch = fields.get("architecture")
    raw_config = fields.get("config")
    if fmt != "safetensors":
        for name in ("architecture", "config"):
            if fields.get(name) is not None:
                raise invalid(name, f"only applies to safetensors weights, not {fmt} archives")
        return {}
    if arch is None or not arch.strip():
        raise invalid(
            "architecture",
            "safetensors holds weights only; name the architecture to load them into "
            "(form field 'architecture', with its keyword arguments in 'config')",
        )
    config: dict[str, Any] = {}
    if raw_config is not None and raw_config.strip():
        try:
            config = json.loads(raw_config)
        except json.JSONDecodeError as e:
            raise invalid("config", f"not valid JSON: {e}") from e
        if not isinstance(config, dict):
            raise invalid("config", "must be a JSON object of the architecture's arguments")
    return {"architecture": arch.strip(), "config": config}


@router.post(
    "",
    response_model=ModelInfo,
    response_model_exclude_none=True,
    status_code=201,
    summary="Upload a model",
    description=UPLOAD_DOC,
    responses={200: {"model": ModelInfo, "description": "Already stored"}}
    | problems(400, 409, 413, 415, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "architecture": {"type": "string"},
                            "config": {"type": "string", "description": "JSON object"},
                        },
                    }
                }
            },
        }
    },
)
async def upload_model(
    request: Request, response: Response, blobs: BlobsDep, settings: SettingsDep
) -> ModelInfo:
    received = await uploads.receive(
        request, blobs, KIND, settings.max_upload_bytes, {"architecture", "config"}
    )
    facts = await uploads.inspect(blobs, received, inspect_model, 4 * settings.max_upload_bytes)
    try:
        extra = _model_fields(facts["format"], received.fields)
    except BaseException:
        blobs.discard(received.staged)
        raise
    record, created = blobs.commit(
        received.staged, {"kind": "model", "filename": received.filename, **facts, **extra}
    )
    if not created and extra and any(record.get(k) != v for k, v in extra.items()):
        raise ProblemError(
            409,
            "conflict",
            f"{received.label}: these bytes are stored as model {record['id']} with "
            f"architecture {record.get('architecture')!r} and config {record.get('config')!r}; "
            "a model id names one architecture",
        )
    response.status_code = 201 if created else 200
    return ModelInfo.model_validate(record)


@router.get(
    "/{id}",
    response_model=ModelInfo,
    response_model_exclude_none=True,
    responses=problems(404, 422),
)
def get_model(record: ExistingModel) -> ModelInfo:
    return ModelInfo.model_validate(record)


@router.delete("/{id}", status_code=204, responses=problems(404, 422))
def delete_model(id: BlobId, blobs: BlobsDep) -> Response:
    """Remove the bytes. Jobs already queued with this model will fail when they start."""
    if not blobs.delete(KIND, id):
        raise not_found("model", id)
    return Response(status_code=204)

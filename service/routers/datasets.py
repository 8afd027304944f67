"""Dataset uploads: .npz or .safetensors holding the inputs and targets arrays, by content."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response

from service import uploads
from service.deps import BlobsDep, SettingsDep
from service.formats.datasets import inspect_dataset
from service.problems import invalid
from service.routers.common import BlobId, ExistingDataset, not_found, problems
from service.schemas import DatasetInfo

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

KIND = "datasets"
_KEY = re.compile(r"^[A-Za-z0-9_.\-/]{1,128}$")

UPLOAD_DOC = """Multipart form: `file` (required), optional `inputs_key` and `targets_key`
(default `inputs` and `targets`): the names of the two arrays, which must exist and share
their first dimension (the examples).

`.npz` (numpy.savez / savez_compressed; numeric dtypes only, object arrays are pickles and
are refused) or `.safetensors`. Array names, shapes and dtypes are read from the headers and
returned. Idempotent by content: **201** when new, **200** when the bytes were stored before."""


def _key(fields: dict[str, str], name: str, default: str) -> str:
    value = fields.get(name, default).strip() or default
    if not _KEY.match(value):
        raise invalid(name, "an array name of letters, digits and _ . - / (at most 128)")
    return value


@router.post(
    "",
    response_model=DatasetInfo,
    status_code=201,
    summary="Upload a dataset",
    description=UPLOAD_DOC,
    responses={200: {"model": DatasetInfo, "description": "Already stored"}}
    | problems(400, 413, 415, 422),
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
                            "inputs_key": {"type": "string", "default": "inputs"},
                            "targets_key": {"type": "string", "default": "targets"},
                        },
                    }
                }
            },
        }
    },
)
async def upload_dataset(
    request: Request, response: Response, blobs: BlobsDep, settings: SettingsDep
) -> DatasetInfo:
    received = await uploads.receive(
        request, blobs, KIND, settings.max_upload_bytes, {"inputs_key", "targets_key"}
    )
    try:
        inputs_key = _key(received.fields, "inputs_key", "inputs")
        targets_key = _key(received.fields, "targets_key", "targets")
    except BaseException:
        blobs.discard(received.staged)
        raise
    facts = await uploads.inspect(
        blobs, received, inspect_dataset, inputs_key, targets_key, 4 * settings.max_upload_bytes
    )
    record, created = blobs.commit(
        received.staged, {"kind": "dataset", "filename": received.filename, **facts}
    )
    response.status_code = 201 if created else 200
    return DatasetInfo.model_validate(record)


@router.get("/{id}", response_model=DatasetInfo, responses=problems(404, 422))
def get_dataset(record: ExistingDataset) -> DatasetInfo:
    return DatasetInfo.model_validate(record)


@router.delete("/{id}", status_code=204, responses=problems(404, 422))
def delete_dataset(id: BlobId, blobs: BlobsDep) -> Response:
    """Remove the bytes. Jobs already queued with this dataset will fail when they start."""
    if not blobs.delete(KIND, id):
        raise not_found("dataset", id)
    return Response(status_code=204)

"""Dataset uploads: .npz or .safetensors holding the inputs and targets arrays, by content."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response

from service.blobs import holding, uploads
from service.blobs.formats.datasets import inspect_dataset
from service.blobs.routes import add_list_and_delete
from service.blobs.schemas import DatasetInfo, DatasetPage
from service.common import ExistingDataset, problems
from service.deps import (
    CallerDep,
    OwnersDep,
    UploaderDep,
)
from service.problems import ProblemError, invalid
from service.tenants.holdings import HeldBlobs
from tasks.contract.datanames import ARRAY_NAME, InputsKey, parse_form_inputs_key

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

KIND = "datasets"

UPLOAD_DOC = """Multipart form: `file` (required), optional `inputs_key` and `targets_key`:
which arrays are the model's inputs and the targets. `inputs_key` is one array name, or JSON for
several inputs: a list (positional) or an object keyword → array name (`{"input_ids":
"input_ids", "attention_mask": "attention_mask"}`). Left out, common names are recognised when
exactly one pair fits (inputs/targets, x/y, X/y, data/labels, images/labels, input_ids/labels,
pixel_values/labels, and `label` wherever `labels` is; beside input_ids, attention_mask,
token_type_ids, position_ids, decoder_input_ids and decoder_attention_mask go by keyword);
otherwise a 422 lists the arrays found and the fix for curl, the CLI and the SDK. The names
are stored with the dataset and shown in the answer and by `GET /v1/datasets/{id}`: a job
that uses it need not repeat them. The arrays must share their first dimension (the
examples).

`.npz` (numpy.savez / savez_compressed; numeric dtypes only, object arrays are pickles and
are refused) or `.safetensors`. Array names, shapes and dtypes are read from the headers and
returned. Idempotent by content: **201** when new, **200** when the bytes were stored before
(names given again replace the stored ones)."""


def _names(fields: dict[str, str]) -> tuple[InputsKey | None, str | None]:
    inputs_raw = fields.get("inputs_key", "").strip()
    targets_raw = fields.get("targets_key", "").strip()
    try:
        inputs_key = parse_form_inputs_key(inputs_raw) if inputs_raw else None
    except ValueError as e:
        raise invalid(
            "inputs_key", f'{e}; e.g. inputs, or ["a", "b"], or {{"keyword": "a"}}'
        ) from None
    if targets_raw and not ARRAY_NAME.match(targets_raw):
        raise invalid("targets_key", "an array name of letters, digits and _ . - / (≤ 128)")
    return inputs_key, targets_raw or None


def _names_of_namesake(blobs: HeldBlobs, filename: str | None) -> str:
    """When a dataset of the same file name was stored with names: say that names are kept
    per content, so these (different) bytes need them again."""
    if not filename:
        return ""
    try:
        records = blobs.records(KIND)
    except OSError:
        return ""
    same = [r for r in records if r.get("filename") == filename and r.get("targets_key")]
    if not same:
        return ""
    r = max(same, key=lambda r: str(r.get("created_at") or ""))
    names = f"inputs_key={json.dumps(r.get('inputs_key'))}, targets_key={r['targets_key']!r}"
    return (
        f". Dataset {r.get('id')} of the same file name is stored with {names}, but names are "
        "kept per content and these bytes differ: give the names again"
    )


@router.post(
    "",
    response_model=DatasetInfo,
    status_code=201,
    summary="Upload a dataset",
    description=UPLOAD_DOC,
    responses={200: {"model": DatasetInfo, "description": "Already stored"}}
    | problems(400, 413, 415, 422),
    openapi_extra=uploads.multipart_openapi(
        inputs_key={
            "type": "string",
            "description": "An array name, or JSON: a list of names or "
            "an object keyword → name. Default: recognised.",
        },
        targets_key={"type": "string", "description": "The targets array. Default: recognised."},
    ),
)
async def upload_dataset(
    request: Request,
    response: Response,
    uploader: UploaderDep,
) -> DatasetInfo:
    blobs, settings, tenant, owners = uploader
    received = await uploads.receive(
        request, blobs, KIND, settings.max_upload_bytes, {"inputs_key", "targets_key"}
    )
    try:
        inputs_key, targets_key = _names(received.fields)
    except BaseException:
        blobs.discard(received.staged)
        raise
    stored = blobs.meta(KIND, received.staged.sha256)  # the same bytes again: their names
    try:
        facts = await uploads.inspect(
            blobs,
            received,
            inspect_dataset,
            inputs_key,
            targets_key,
            4 * settings.max_upload_bytes,
            stored,
        )
    except ProblemError as e:
        if e.slug == "missing-array" and stored is None:
            e.detail += _names_of_namesake(HeldBlobs(blobs, owners, tenant), received.filename)
            for error in e.errors or []:
                error["message"] = e.detail
        raise
    meta = {"kind": "dataset", "filename": received.filename, **facts}
    record, created, fresh = holding.keep(uploader, received.staged, meta)
    given = {"inputs_key": inputs_key, "targets_key": targets_key}
    # names given again replace the stored ones, unless another tenant holds the bytes too
    sole = owners.holder_count(KIND, record["id"]) <= 1
    if not created and any(given.values()) and sole:
        names = {k: facts[k] for k, v in given.items() if v is not None}
        stored = blobs.update_meta(KIND, record["id"], names)
        record = holding.seen_by(stored, owners, tenant, KIND)
    response.status_code = 201 if fresh else 200
    return DatasetInfo.model_validate(record)


@router.get("/{id}", response_model=DatasetInfo, responses=problems(404, 422))
def get_dataset(record: ExistingDataset, tenant: CallerDep, owners: OwnersDep) -> DatasetInfo:
    return DatasetInfo.model_validate(holding.seen_by(record, owners, tenant, KIND))


add_list_and_delete(router, KIND, "dataset", DatasetInfo, DatasetPage)

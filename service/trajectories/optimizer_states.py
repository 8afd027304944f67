"""Adam trajectories' optimizer states: upload (checked without torch) and read.

A checkpoint of an Adam run names its state (`checkpoints.N.optimizer_state`), from which the
worker builds the preconditioner P of λmax(P⁻¹H).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from service.blobs import holding, uploads
from service.blobs.formats import Refused, read_head
from service.blobs.formats import safetensors as st
from service.blobs.schemas import BlobInfo
from service.common import _existing_blob, problems
from service.deps import CallerDep, OwnersDep, UploaderDep
from service.problems import problem_response
from tasks.contract.spec import Problem

router = APIRouter(prefix="/v1/trajectories/optimizer-states", tags=["trajectories"])

KIND = "optimizer_states"
STATE_PREFIX = "exp_avg_sq."
STATE_HOW = (
    "save Adam's state by parameter name: safetensors.torch.save_file({'step': "
    "torch.tensor([t]), **{'exp_avg_sq.' + name: opt.state[p]['exp_avg_sq'] for name, p in "
    "model.named_parameters()}}, 'state.safetensors') (the SDK's optimizer_state_file does it)"
)


class OptimizerStateInfo(BlobInfo):
    format: Literal["safetensors"]
    parameters: list[str] = Field(description="Parameter names with an exp_avg_sq tensor.")
    step_dtype: str = Field(description="dtype of the stored step.")


def inspect_optimizer_state(path: Path, label: str) -> dict[str, Any]:
    """Torch-free check of an optimizer-state upload: safetensors holding a one-element `step`
    and `exp_avg_sq.<parameter name>` tensors of a floating dtype, nothing else."""
    size, head = read_head(path, label)
    if not st.looks_like(head, size):
        raise Refused(415, "unknown-format", f"{label}: not a safetensors file; {STATE_HOW}")
    tensors = st.read_header(path, label)
    step = tensors.get("step")
    if step is None or _numel(step["shape"]) != 1:
        raise Refused(
            422, "corrupt", f"{label}: needs a one-element tensor 'step'; {STATE_HOW}", "file"
        )
    names = sorted(n[len(STATE_PREFIX) :] for n in tensors if n.startswith(STATE_PREFIX))
    if not names:
        raise Refused(
            422, "corrupt", f"{label}: no '{STATE_PREFIX}<parameter>' tensors; {STATE_HOW}", "file"
        )
    other = sorted(n for n in tensors if n != "step" and not n.startswith(STATE_PREFIX))
    if other:
        raise Refused(
            422,
            "corrupt",
            f"{label}: unexpected tensors {other[:5]}; expected 'step' and "
            f"'{STATE_PREFIX}<parameter>' only",
            "file",
        )
    bad = [n for n in names if not tensors[STATE_PREFIX + n]["dtype"].startswith(("float", "bf"))]
    if bad:
        raise Refused(
            422, "unsupported-dtype", f"{label}: {STATE_PREFIX}{bad[0]} is not floating", "file"
        )
    return {"format": "safetensors", "parameters": names, "step_dtype": step["dtype"]}


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


@router.post(
    "",
    response_model=OptimizerStateInfo,
    status_code=201,
    summary="Upload an optimizer state",
    responses={200: {"model": OptimizerStateInfo, "description": "Already stored"}}
    | problems(400, 413, 415, 422),
    openapi_extra=uploads.multipart_openapi(),
)
async def upload_optimizer_state(
    request: Request,
    response: Response,
    uploader: UploaderDep,
) -> OptimizerStateInfo:
    """Multipart form, `file`: a `.safetensors` of Adam's state at one checkpoint, a
    one-element `step` (t) and `exp_avg_sq.<parameter name>` (v_t, the parameter's shape)
    for every parameter. Reference its id as the checkpoint's `optimizer_state`. Idempotent
    by content: **201** when new, **200** when stored before."""
    blobs, settings = uploader.blobs, uploader.settings
    received = await uploads.receive(request, blobs, KIND, settings.max_upload_bytes, set())
    facts = await uploads.inspect(blobs, received, inspect_optimizer_state)
    meta = {"kind": "optimizer_state", "filename": received.filename, **facts}
    record, _, fresh = holding.keep(uploader, received.staged, meta)
    response.status_code = 201 if fresh else 200
    return OptimizerStateInfo.model_validate(record)


@router.api_route(
    "", methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"], include_in_schema=False
)
def optimizer_states_not_allowed(request: Request) -> Response:
    """This path serves POST only. Without this route a GET would fall through to
    /v1/trajectories/{id} (and a 405 would list that path's methods in its Allow)."""
    problem = Problem(
        type="about:blank",
        title="Method not allowed",
        status=405,
        detail=f"{request.method} is not allowed on {request.url.path}; allowed: POST",
        instance=request.url.path,
    )
    return problem_response(problem, {"Allow": "POST"})


ExistingOptimizerState = Annotated[dict[str, Any], Depends(_existing_blob(KIND, "optimizer state"))]


@router.get(
    "/{id}",
    response_model=OptimizerStateInfo,
    summary="Read an optimizer state's record",
    responses=problems(404, 422),
)
def get_optimizer_state(
    record: ExistingOptimizerState, tenant: CallerDep, owners: OwnersDep
) -> OptimizerStateInfo:
    return OptimizerStateInfo.model_validate(holding.seen_by(record, owners, tenant, KIND))

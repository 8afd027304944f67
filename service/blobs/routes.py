"""The routes every kind of upload shares: its list (newest first, page by page) and its
delete (refused while the caller's queued or running runs use it, unless forced).

`add_list_and_delete` adds both to a kind's router, named and described as hand-written
routes would be (`list_models`, `delete_model`, ...), so the OpenAPI document and the
operation ids stay those of the kind.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from service.blobs import holding, usage
from service.common import BlobId, problems
from service.deps import BlobsDep, CallerDep, JobsDep, OwnersDep, TrajectoriesDep

Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]

DELETE_DOC = """Remove the caller's upload (the bytes go once no tenant holds them). A {noun} that a
queued or running job or trajectory of the caller's uses is kept:
**409** (`in-use`) naming them; `?force=true` deletes it anyway (they fail when they
load it)."""


def add_list_and_delete(
    router: APIRouter, kind: str, noun: str, info: type[BaseModel], page: type[BaseModel]
) -> None:
    """Add `GET ""` (a `page` of `info`) and `DELETE "/{id}"` for the uploads of `kind`,
    called `noun` in answers and summaries."""

    def list_uploads(
        blobs: BlobsDep,
        tenant: CallerDep,
        owners: OwnersDep,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> Any:
        records = holding.listed(blobs, owners, tenant, kind)
        items, next_cursor = usage.page(records, limit, cursor, noun)
        return page(items=[info.model_validate(r) for r in items], next_cursor=next_cursor)

    def delete_upload(
        id: BlobId,
        blobs: BlobsDep,
        jobs: JobsDep,
        trajectories: TrajectoriesDep,
        tenant: CallerDep,
        owners: OwnersDep,
        force: usage.Force = False,
    ) -> Response:
        usage.delete(blobs, [jobs, trajectories], kind, noun, id, force, (tenant, owners))
        return Response(status_code=204)

    router.add_api_route(
        "",
        list_uploads,
        methods=["GET"],
        response_model=page,
        summary=f"List {noun}s",
        description=f"The uploaded {noun}s, newest first.",
        responses=problems(422),
        name=f"list_{noun}s",
    )
    router.add_api_route(
        "/{id}",
        delete_upload,
        methods=["DELETE"],
        status_code=204,
        summary=f"Delete a {noun}",
        description=DELETE_DOC.format(noun=noun),
        responses=problems(404, 409, 422),
        name=f"delete_{noun}",
    )

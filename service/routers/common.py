"""Pieces the blob routers share: the id path parameter and the problem responses they list."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path

from service.problems import MEDIA_TYPE
from tasks.spec import MODEL_ID_PATTERN, Problem

BlobId = Annotated[
    str,
    Path(
        pattern=MODEL_ID_PATTERN,
        description="The lowercase hex sha256 of the file, as returned by the upload.",
    ),
]


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries saying these statuses answer with a problem+json body."""
    return {s: {"model": Problem, "content": {MEDIA_TYPE: {}}} for s in statuses}

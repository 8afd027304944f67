"""How a picture is answered and documented: `image/png` bytes, a binary string in OpenAPI."""

from __future__ import annotations

from typing import Any

from fastapi import Response

MEDIA_TYPE = "image/png"


def png_response(data: bytes) -> Response:
    return Response(content=data, media_type=MEDIA_TYPE)


def png_openapi(description: str) -> dict[int | str, dict[str, Any]]:
    """The 200 entry of a route that answers a PNG."""
    schema = {"type": "string", "format": "binary"}
    return {200: {"description": description, "content": {MEDIA_TYPE: {"schema": schema}}}}

"""Fetching a picture: ask for image/png, optionally write it to a path, return the bytes."""

from __future__ import annotations

import os
from pathlib import Path

from sharpness_client._http import Request


def png_request(path: str) -> Request:
    return Request("GET", path, headers={"Accept": "image/png, application/problem+json"})


def save(data: bytes, path: str | os.PathLike[str] | None) -> bytes:
    """Write `data` to `path` (parent folders made) when given; return the bytes."""
    if path is not None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return data

"""Putting test files into a worker's blob store, as an upload through the gateway would."""

from __future__ import annotations

from pathlib import Path

from tasks.store.blobs import BlobStore


def put(blobs: BlobStore, kind: str, path: Path, **meta: object) -> str:
    """Store `path` under `kind` with `meta` in its record; returns the blob's id."""
    record, _ = blobs.put_chunks(
        kind, [path.read_bytes()], 1 << 30, {"filename": path.name, **meta}
    )
    return record["id"]

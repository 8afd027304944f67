"""Content-addressed blob store on a directory shared by the gateway and the workers.

Layout: {root}/{kind}/{sha256}        the bytes
        {root}/{kind}/{sha256}.json   metadata (format, size, original filename, created_at)

An upload is streamed to a temporary file in the same directory while its sha256 is computed,
then renamed into place (atomic on one filesystem), so a reader never sees half a blob and a
re-upload of the same bytes is idempotent. `BlobStore` is the one interface; an object-store
backend can implement the same five methods.

The gateway uses the two-phase form (`stage_stream`, then `commit` or `discard`): it inspects
the staged bytes (format, arrays) and reads the form fields that follow the file before it
decides to keep them, so a refused upload never becomes a blob, even for a moment.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KINDS = ("models", "datasets", "optimizer_states")


class TooLarge(Exception):
    """The upload exceeded the size cap; nothing was stored."""


@dataclass
class Staged:
    """Bytes written to a temporary file beside the blobs, hashed, not yet a blob."""

    kind: str
    tmp: Path
    sha256: str
    size: int


class BlobStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _dir(self, kind: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown blob kind {kind!r}")
        d = self.root / kind
        d.mkdir(parents=True, exist_ok=True)
        return d

    def path(self, kind: str, blob_id: str) -> Path:
        """Where the bytes of a blob live (may not exist)."""
        if len(blob_id) != 64 or any(c not in "0123456789abcdef" for c in blob_id):
            raise ValueError("a blob id is a lowercase hex sha256")
        return self._dir(kind) / blob_id

    def exists(self, kind: str, blob_id: str) -> bool:
        return self.path(kind, blob_id).is_file()

    def meta(self, kind: str, blob_id: str) -> dict[str, Any] | None:
        p = self.path(kind, blob_id).with_suffix(".json")
        if not p.is_file() or not self.exists(kind, blob_id):
            return None
        return json.loads(p.read_text())

    def delete(self, kind: str, blob_id: str) -> bool:
        p = self.path(kind, blob_id)
        found = p.is_file()
        for q in (p, p.with_suffix(".json")):
            q.unlink(missing_ok=True)
        return found

    def _begin(self, kind: str) -> tuple[Path, Any]:
        d = self._dir(kind)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".upload-")
        return Path(tmp), os.fdopen(fd, "wb")

    def _commit(
        self, kind: str, tmp: Path, digest: str, size: int, meta: dict[str, Any]
    ) -> dict[str, Any]:
        final = self.path(kind, digest)
        existing = self.meta(kind, digest)
        if existing is not None:  # idempotent by content
            tmp.unlink(missing_ok=True)
            return existing
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; workers may run as another user
        os.replace(tmp, final)
        record = {
            "id": digest,
            "sha256": digest,
            "size_bytes": size,
            "created_at": datetime.now(UTC).isoformat(),
            **meta,
        }
        final.with_suffix(".json").write_text(json.dumps(record))
        return record

    def put_chunks(
        self, kind: str, chunks: Iterable[bytes], max_bytes: int, meta: dict[str, Any]
    ) -> tuple[dict[str, Any], Path]:
        """Store a stream; returns (metadata, path). Raises TooLarge past `max_bytes`."""
        tmp, fh = self._begin(kind)
        h, size = hashlib.sha256(), 0
        try:
            with fh:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"larger than the {max_bytes}-byte limit")
                    h.update(chunk)
                    fh.write(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        digest = h.hexdigest()
        return self._commit(kind, tmp, digest, size, meta), self.path(kind, digest)

    async def put_stream(
        self, kind: str, chunks: AsyncIterator[bytes], max_bytes: int, meta: dict[str, Any]
    ) -> tuple[dict[str, Any], Path]:
        """Async variant for the gateway (reads an upload chunk by chunk)."""
        tmp, fh = self._begin(kind)
        h, size = hashlib.sha256(), 0
        try:
            with fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"larger than the {max_bytes}-byte limit")
                    h.update(chunk)
                    fh.write(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        digest = h.hexdigest()
        return self._commit(kind, tmp, digest, size, meta), self.path(kind, digest)

    async def stage_stream(self, kind: str, chunks: AsyncIterator[bytes], max_bytes: int) -> Staged:
        """Write a stream to a temporary file, hashing it; raises TooLarge past `max_bytes`.

        Nothing is visible under the blob's id until `commit`; `discard` removes the file.
        """
        tmp, fh = self._begin(kind)
        h, size = hashlib.sha256(), 0
        try:
            with fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"larger than the {max_bytes}-byte limit")
                    h.update(chunk)
                    fh.write(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return Staged(kind=kind, tmp=tmp, sha256=h.hexdigest(), size=size)

    def commit(self, staged: Staged, meta: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Make staged bytes a blob; returns (metadata, created). Same bytes: the stored record."""
        created = self.meta(staged.kind, staged.sha256) is None
        record = self._commit(staged.kind, staged.tmp, staged.sha256, staged.size, meta)
        return record, created

    def update_meta(self, kind: str, digest: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Replace some fields of a stored blob's record (names given at a later upload)."""
        record = {**(self.meta(kind, digest) or {}), **fields}
        sidecar = self.path(kind, digest).with_suffix(".json")
        tmp = sidecar.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, sidecar)
        return record

    @staticmethod
    def discard(staged: Staged) -> None:
        staged.tmp.unlink(missing_ok=True)

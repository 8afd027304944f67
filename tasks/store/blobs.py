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
import re
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

KINDS = ("models", "datasets", "optimizer_states")
BLOB_ID = re.compile(r"[0-9a-f]{64}")


class TooLarge(Exception):
    """The upload exceeded the size cap; nothing was stored."""


@dataclass
class Staged:
    """Bytes written to a temporary file beside the blobs, hashed, not yet a blob."""

    kind: str
    tmp: Path
    sha256: str
    size: int


class _Sink:
    """Where staged bytes go: counted against the limit and hashed as they are written."""

    def __init__(self, kind: str, tmp: Path, fh: BinaryIO, max_bytes: int) -> None:
        self.kind, self.tmp, self.fh, self.max_bytes = kind, tmp, fh, max_bytes
        self.hash, self.size = hashlib.sha256(), 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise TooLarge(f"larger than the {self.max_bytes}-byte limit")
        self.hash.update(chunk)
        self.fh.write(chunk)

    def staged(self) -> Staged:
        return Staged(kind=self.kind, tmp=self.tmp, sha256=self.hash.hexdigest(), size=self.size)


class BlobStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._made: set[str] = set()  # kinds whose directory this instance made or saw

    def _dir(self, kind: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown blob kind {kind!r}")
        d = self.root / kind
        if kind not in self._made:  # one mkdir per kind, not one per lookup (every submit)
            d.mkdir(parents=True, exist_ok=True)
            self._made.add(kind)
        return d

    def path(self, kind: str, blob_id: str) -> Path:
        """Where the bytes of a blob live (may not exist)."""
        if not BLOB_ID.fullmatch(blob_id):
            raise ValueError("a blob id is a lowercase hex sha256")
        return self._dir(kind) / blob_id

    def exists(self, kind: str, blob_id: str) -> bool:
        return self.path(kind, blob_id).is_file()

    def meta(self, kind: str, blob_id: str) -> dict[str, Any] | None:
        """The blob's metadata, or None when its bytes or its metadata are absent (a delete
        removes the bytes first, so a half-deleted blob is already gone)."""
        path = self.path(kind, blob_id)
        try:
            text = path.with_suffix(".json").read_text()
        except FileNotFoundError:
            return None
        return json.loads(text) if path.is_file() else None

    def records(self, kind: str) -> list[dict[str, Any]]:
        """Every stored blob's metadata, newest first (a blob whose bytes or metadata are
        missing, half written or half deleted, is left out)."""
        out = []
        for sidecar in self._dir(kind).glob("*.json"):
            if not BLOB_ID.fullmatch(sidecar.stem) or not sidecar.with_suffix("").is_file():
                continue
            try:
                out.append(json.loads(sidecar.read_text()))
            except (OSError, ValueError):
                continue
        out.sort(key=lambda r: (str(r.get("created_at", "")), str(r.get("id", ""))), reverse=True)
        return out

    def delete(self, kind: str, blob_id: str) -> bool:
        p = self.path(kind, blob_id)
        found = p.is_file()
        for q in (p, p.with_suffix(".json")):
            q.unlink(missing_ok=True)
        return found

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
        """Store a stream at once; returns (metadata, path). Raises TooLarge past `max_bytes`."""
        with self._staging(kind, max_bytes) as sink:
            for chunk in chunks:
                sink.write(chunk)
        staged = sink.staged()
        return self.commit(staged, meta)[0], self.path(kind, staged.sha256)

    async def stage_stream(self, kind: str, chunks: AsyncIterator[bytes], max_bytes: int) -> Staged:
        """Write a stream to a temporary file, hashing it; raises TooLarge past `max_bytes`.

        Nothing is visible under the blob's id until `commit`; `discard` removes the file.
        """
        with self._staging(kind, max_bytes) as sink:
            async for chunk in chunks:
                sink.write(chunk)
        return sink.staged()

    @contextmanager
    def _staging(self, kind: str, max_bytes: int) -> Iterator[_Sink]:
        """A temporary file in the kind's directory that hashes what is written; removed when
        the writing fails (too large, a broken stream)."""
        d = self._dir(kind)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".upload-")
        sink = _Sink(kind, Path(tmp), os.fdopen(fd, "wb"), max_bytes)
        try:
            with sink.fh:
                yield sink
        except BaseException:
            sink.tmp.unlink(missing_ok=True)
            raise

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

"""The upload flow shared by models and datasets: stream, stage, inspect, then keep or drop.

The file part is hashed into a staging file as it arrives; the small form fields (which may
come before or after the file) are collected; only when the whole body arrived and the
inspector accepted the bytes does the staging file become a blob. Any refusal (size, format,
fields, a truncated body) discards it, so a refused upload never leaves anything stored.
"""

from __future__ import annotations

import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel
from starlette.requests import Request

from service.blobs import multipart
from service.blobs.formats import Refused
from service.problems import ProblemError, field_error, invalid
from tasks.artifacts.hf_checkpoint import canonical_zip
from tasks.store.blobs import BlobStore, Staged, TooLarge

MAX_FIELD_BYTES = 64 * 1024
MULTIPART_SLACK = 256 * 1024  # boundaries, part headers and small fields around the file


@dataclass
class Received:
    staged: Staged
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How messages name the file: the client's filename when it sent one."""
        return f"file {self.filename!r}" if self.filename else "file"


def multipart_openapi(
    json_body: type[BaseModel] | None = None, **fields: dict[str, Any]
) -> dict[str, Any]:
    """The OpenAPI request body of an upload route: a multipart form with the required binary
    `file` and the optional text `fields` (name → JSON schema), and where the route also takes
    a JSON body (a model reference), that model's schema. The routes read the body as a
    stream (`receive`), so FastAPI cannot infer it."""
    properties = {"file": {"type": "string", "format": "binary"}, **fields}
    schema = {"type": "object", "required": ["file"], "properties": properties}
    content: dict[str, Any] = {"multipart/form-data": {"schema": schema}}
    if json_body is not None:
        content["application/json"] = {"schema": json_body.model_json_schema()}
    return {"requestBody": {"required": True, "content": content}}


def _too_large(max_bytes: int, what: str) -> ProblemError:
    return ProblemError(
        413,
        "too-large",
        f"{what} is larger than the {max_bytes}-byte limit (SHARPNESS_MAX_UPLOAD_BYTES); "
        "nothing was stored",
    )


async def _part_data(events: AsyncIterator[multipart.Event]) -> AsyncIterator[bytes]:
    async for event in events:
        if isinstance(event, multipart.PartData):
            yield event.data
        elif isinstance(event, multipart.PartEnd):
            return


async def _small_field(events: AsyncIterator[multipart.Event], name: str) -> str:
    buf = bytearray()
    async for chunk in _part_data(events):
        buf.extend(chunk)
        if len(buf) > MAX_FIELD_BYTES:
            raise invalid(name, f"longer than {MAX_FIELD_BYTES} bytes")
    try:
        return buf.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid(name, "not UTF-8 text") from e


async def receive(
    request: Request, blobs: BlobStore, kind: str, max_bytes: int, fields: set[str]
) -> Received:
    """Stream the body: the `file` part into a staging file, the named `fields` as text."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MULTIPART_SLACK:
        raise _too_large(max_bytes, f"file: the request body ({declared} bytes)")
    events = multipart.events(request)
    staged: Staged | None = None
    filename: str | None = None
    values: dict[str, str] = {}
    try:
        async for event in events:
            if not isinstance(event, multipart.PartStart):
                continue
            if event.name == "file":
                if staged is not None:
                    raise invalid("file", "send exactly one file part")
                filename = event.filename
                staged = await blobs.stage_stream(kind, _part_data(events), max_bytes)
            elif event.name in fields:
                values[event.name] = await _small_field(events, event.name)
            else:
                allowed = ", ".join(["file", *sorted(fields)])
                raise invalid(event.name or "(unnamed)", f"unknown form field; expected {allowed}")
        if staged is None:
            raise invalid("file", "missing: send the file as the multipart form field 'file'")
    except TooLarge as e:
        label = f"file {filename!r}" if filename else "file"
        raise _too_large(max_bytes, label) from e
    except BaseException:
        if staged is not None:
            blobs.discard(staged)
        raise
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return Received(staged=staged, filename=filename, fields=values)


EMPTY_HINT = (
    "; if you sent a folder (curl -F file=@folder sends nothing), zip the folder and send the "
    "zip (or use the SDK, which zips it: client.models.upload('folder/'))"
)


async def inspect(
    blobs: BlobStore, received: Received, inspector: Callable[..., dict[str, Any]], *args: Any
) -> dict[str, Any]:
    """Run a (blocking, file-reading) inspector off the event loop; a refusal drops the file.
    A Hugging Face checkpoint zip is then written again canonically (its id is its content's,
    whatever tool zipped it, with or without a top folder): `received.staged` is replaced."""
    try:
        facts = await anyio.to_thread.run_sync(
            inspector, Path(received.staged.tmp), received.label, *args
        )
        if facts.get("format") == "huggingface" and zipfile.is_zipfile(received.staged.tmp):
            received.staged = await _canonical(blobs, received)
        return facts
    except Refused as e:
        blobs.discard(received.staged)
        detail = e.detail + (EMPTY_HINT if e.slug == "empty" and received.staged.size == 0 else "")
        errors = [field_error(e.field, detail)] if e.field else None
        raise ProblemError(e.status, e.slug, detail, errors=errors) from e
    except BaseException:
        blobs.discard(received.staged)
        raise


async def _canonical(blobs: BlobStore, received: Received) -> Staged:
    """The checkpoint zip staged again in its canonical form (tasks.artifacts.hf_checkpoint)."""
    staged = received.staged
    tmp = Path(staged.tmp).with_name(Path(staged.tmp).name + ".canonical")
    try:
        await anyio.to_thread.run_sync(canonical_zip, staged.tmp, tmp, received.label)

        async def chunks() -> AsyncIterator[bytes]:
            with tmp.open("rb") as fh:
                while chunk := await anyio.to_thread.run_sync(fh.read, 1 << 20):
                    yield chunk

        # the canonical form may be a little larger than what was sent: no size cap here
        again = await blobs.stage_stream(staged.kind, chunks(), 1 << 62)
    finally:
        tmp.unlink(missing_ok=True)
    blobs.discard(staged)
    return again

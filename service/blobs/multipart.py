"""Parse a multipart/form-data body as it arrives, one event at a time.

Starlette's `request.form()` spools a whole file part to a temporary file before the handler
sees a byte, so an oversize upload would be written out in full before it could be refused.
Here the handler consumes parts as a stream: file data goes straight to the blob store's
staging file (which enforces the size cap), small fields are collected with their own cap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from service.problems import ProblemError


@dataclass
class PartStart:
    name: str
    filename: str | None


@dataclass
class PartData:
    data: bytes


@dataclass
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


def boundary_of(request: Request) -> bytes:
    """The multipart boundary, or a 415 naming the Content-Type that was sent instead."""
    ctype = request.headers.get("content-type", "")
    mime, options = parse_options_header(ctype)
    if mime != b"multipart/form-data" or not options.get(b"boundary"):
        by_reference = (
            '; or, to register a model by reference, application/json with {"uri": "file:///..."}'
            if request.url.path.rstrip("/").endswith("/v1/models")
            else ""
        )
        raise ProblemError(
            415,
            "not-multipart",
            f"Content-Type: expected multipart/form-data with the file in field 'file', "
            f"got {ctype or 'none'!r}{by_reference}",
        )
    return options[b"boundary"]


def _disposition(headers: dict[bytes, bytes]) -> PartStart:
    _, opts = parse_options_header(headers.get(b"content-disposition", b""))
    name = opts.get(b"name", b"").decode("utf-8", "replace")
    raw_filename = opts.get(b"filename")
    filename = None
    if raw_filename is not None:
        # keep the last path component only; it is a label, never a path we open
        filename = raw_filename.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
        filename = filename[:255] or None
    return PartStart(name=name, filename=filename)


async def events(request: Request) -> AsyncIterator[Event]:
    """PartStart, PartData..., PartEnd for each part; a 400 if the body is malformed or ends
    before its closing boundary (a truncated upload)."""
    boundary = boundary_of(request)
    pending: list[Event] = []
    headers: dict[bytes, bytes] = {}
    field, value = bytearray(), bytearray()
    ended = False

    def on_header_end() -> None:
        headers[bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    def on_end() -> None:
        nonlocal ended
        ended = True

    callbacks = {
        "on_part_begin": headers.clear,
        "on_header_field": lambda d, s, e: field.extend(d[s:e]),
        "on_header_value": lambda d, s, e: value.extend(d[s:e]),
        "on_header_end": on_header_end,
        "on_headers_finished": lambda: pending.append(_disposition(headers)),
        "on_part_data": lambda d, s, e: pending.append(PartData(bytes(d[s:e]))),
        "on_part_end": lambda: pending.append(PartEnd()),
        "on_end": on_end,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            try:
                parser.write(chunk)
            except MultipartParseError as e:
                raise ProblemError(400, "bad-multipart", f"malformed multipart body: {e}") from e
            for event in pending:
                yield event
            pending.clear()
    except ClientDisconnect as e:  # nobody reads the answer; the staged file is dropped
        raise ProblemError(
            400, "truncated-upload", "the client disconnected mid-upload; nothing was stored"
        ) from e
    if not ended:
        raise ProblemError(
            400,
            "truncated-upload",
            "the multipart body ended before its closing boundary: the upload was truncated; "
            "nothing was stored",
        )

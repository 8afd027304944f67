"""What every resource shares: a collection at `path` whose answers are `record`s, read by id.

`create_request` posts a spec or another body with only the fields that were set, and
`upload_request` a file with its form fields (those left None are not sent; a value that is
not a string travels as JSON). `Uploads` adds what models and datasets share: list and delete.
Runs (jobs, trajectories) extend `Resource` in `_runs.py`. `Shared` holds the methods written
once for both clients.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from sharpness_client._files import FileInput, FileSource
from sharpness_client._http import AsyncHTTP, Request, SyncHTTP
from sharpness_client._paging import AsyncPageList, PageList, list_request
from sharpness_client._png import png_request, save
from sharpness_client.types import Page

R = TypeVar("R", bound=BaseModel)
Out = TypeVar("Out")
Png = TypeVar("Png")
T = TypeVar("T")

#: What an `AsyncResource`'s request answers: a coroutine of the record (or of the bytes).
Awaiting = Coroutine[Any, Any, T]
PathLike = str | os.PathLike[str] | None


def upload_request(
    path: str, file: FileInput, filename: str | None, fields: Mapping[str, Any]
) -> Request:
    """POST `file` to `path` with the form `fields` that are not None (JSON unless text).
    Uploads are stored by content (the same bytes and fields: the same id, 200), so a retry
    after a lost answer stores nothing twice; the service takes no Idempotency-Key here."""
    data = {
        k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v is not None
    }
    source = FileSource.of(file, filename)
    return Request("POST", path, file=source, data=data or None, repeatable=True)


def create_request(path: str, spec: BaseModel, idempotency_key: str | None) -> Request:
    """POST `spec` with only the fields that were set: those left out take the server's
    defaults (GET /openapi.json). Without `idempotency_key` one (uuid4) is made for this call
    and reused on every retry, so a lost answer never makes a second run (or study)."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    body = spec.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    return Request("POST", path, json=body, headers=headers, idempotent=True)


class Shared(Generic[Out]):
    """Methods written once for `Client` and `AsyncClient`. Each builds its request and returns
    `self._send(request)`: from a `Resource` the record (`Out` is the record's type), from an
    `AsyncResource` a coroutine of it (`Out` is `Awaiting[record]`), which the caller awaits as
    any async method's. A method that must act on the answer, or hold something open until it
    comes (a temporary file), is written per client. Put it first in the bases, before the
    resource, so its methods are the ones called."""

    path: ClassVar[str]

    if TYPE_CHECKING:  # the resource's own, found after this class at run time

        def _send(self, req: Request) -> Out: ...

        def _send_within(
            self, context: AbstractContextManager[T], request: Callable[[T], Request]
        ) -> Out: ...


class SharedPng(Shared[Out], Generic[Out, Png]):
    """`Shared` for a resource that also draws: `_png` answers the picture's bytes from a
    `Resource` (`Png` is bytes), a coroutine of them from an `AsyncResource`."""

    if TYPE_CHECKING:

        def _png(self, path: str, to: PathLike) -> Png: ...


class Resource(Generic[R]):
    path: ClassVar[str]
    record: type[R]

    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def _send(self, req: Request) -> R:
        return self.record.model_validate(self._http.send(req).json())

    def _send_within(
        self, context: AbstractContextManager[T], request: Callable[[T], Request]
    ) -> R:
        """Send the request made from what `context` gives, inside it (a temporary file)."""
        with context as value:
            return self._send(request(value))

    def get(self, id: str) -> R:
        return self._send(Request("GET", f"{self.path}/{id}"))

    def _png(self, path: str, to: PathLike) -> bytes:
        """The PNG at `path`, written to `to` when given."""
        return save(self._http.send(png_request(path)).content, to)


class AsyncResource(Generic[R]):
    path: ClassVar[str]
    record: type[R]

    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    async def _send(self, req: Request) -> R:
        return self.record.model_validate((await self._http.send(req)).json())

    async def _send_within(
        self, context: AbstractContextManager[T], request: Callable[[T], Request]
    ) -> R:
        """Send the request made from what `context` gives, inside it, when awaited."""
        with context as value:
            return await self._send(request(value))

    async def get(self, id: str) -> R:
        return await self._send(Request("GET", f"{self.path}/{id}"))

    async def _png(self, path: str, to: PathLike) -> bytes:
        return save((await self._http.send(png_request(path))).content, to)


def delete_request(path: str, id: str, force: bool) -> Request:
    """DELETE one upload; `force` deletes it even while queued or running runs use it."""
    return Request("DELETE", f"{path}/{id}", params={"force": "true"} if force else None)


class Uploads(Resource[R]):
    def list(self, *, limit: int | None = None, cursor: str | None = None) -> PageList[R]:
        """The uploads, newest first; iterating follows every page."""

        def fetch(c: str | None) -> Page[R]:
            request = list_request(self.path, limit=limit, cursor=c)
            return Page[self.record].model_validate(self._http.send(request).json())  # type: ignore[name-defined]

        return PageList(fetch(cursor), fetch)

    def delete(self, id: str, *, force: bool = False) -> None:
        """Delete the upload. While a queued or running job or trajectory uses it, the
        service refuses (ConflictError, kind "in-use", naming them) unless `force`."""
        self._http.send(delete_request(self.path, id, force))


class AsyncUploads(AsyncResource[R]):
    async def list(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> AsyncPageList[R]:
        """The uploads, newest first; `async for` follows every page."""

        async def fetch(c: str | None) -> Page[R]:
            request = list_request(self.path, limit=limit, cursor=c)
            resp = await self._http.send(request)
            return Page[self.record].model_validate(resp.json())  # type: ignore[name-defined]

        return AsyncPageList(await fetch(cursor), fetch)

    async def delete(self, id: str, *, force: bool = False) -> None:
        await self._http.send(delete_request(self.path, id, force))

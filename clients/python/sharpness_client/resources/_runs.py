"""What `client.jobs` and `client.trajectories` share: read, list (auto-paginating) and cancel
a run, and wait for it. Each subclass names its path and record model and adds `create`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel

from sharpness_client._http import AsyncHTTP, Request, SyncHTTP
from sharpness_client._paging import AsyncPageList, PageList, list_request
from sharpness_client._poll import Poller, async_wait_for, wait_for
from sharpness_client.types import JobStatus, Page

R = TypeVar("R", bound=BaseModel)


class Runs(Generic[R]):
    path: ClassVar[str]
    record: type[R]

    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def _page(self) -> type[Page[R]]:
        return Page[self.record]  # type: ignore[name-defined]

    def get(self, id: str) -> R:
        return self.record.model_validate(
            self._http.send(Request("GET", f"{self.path}/{id}")).json()
        )

    def list(
        self,
        *,
        status: str | JobStatus | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> PageList[R]:
        """Newest first. `for run in client.<runs>.list(...)` follows every page."""

        def fetch(c: str | None) -> Page[R]:
            request = list_request(self.path, limit=limit, cursor=c, status=status, labels=labels)
            return self._page().model_validate(self._http.send(request).json())

        return PageList(fetch(cursor), fetch)

    def cancel(self, id: str) -> R:
        """Queued: cancelled at once. Running: `cancel_requested`, the worker stops it soon
        (`wait` for status cancelled). Finished: ConflictError."""
        resp = self._http.send(Request("POST", f"{self.path}/{id}/cancel"))
        return self.record.model_validate(resp.json())

    def _wait(self, id: str, poll: Poller) -> R:
        return wait_for(lambda: self.get(id), poll)


class AsyncRuns(Generic[R]):
    path: ClassVar[str]
    record: type[R]

    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    def _page(self) -> type[Page[R]]:
        return Page[self.record]  # type: ignore[name-defined]

    async def get(self, id: str) -> R:
        resp = await self._http.send(Request("GET", f"{self.path}/{id}"))
        return self.record.model_validate(resp.json())

    async def list(
        self,
        *,
        status: str | JobStatus | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> AsyncPageList[R]:
        async def fetch(c: str | None) -> Page[R]:
            request = list_request(self.path, limit=limit, cursor=c, status=status, labels=labels)
            return self._page().model_validate((await self._http.send(request)).json())

        return AsyncPageList(await fetch(cursor), fetch)

    async def cancel(self, id: str) -> R:
        resp = await self._http.send(Request("POST", f"{self.path}/{id}/cancel"))
        return self.record.model_validate(resp.json())

    async def _wait(self, id: str, poll: Poller) -> R:
        return await async_wait_for(lambda: self.get(id), poll)

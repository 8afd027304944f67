"""What `client.jobs` and `client.trajectories` share: submit a spec, read, list
(auto-paginating), cancel and wait for a run. Each subclass names its path and record model
and adds `create`, which builds its spec (`_spec.py`) and posts it (`_base.create_request`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel

from sharpness_client._http import Request
from sharpness_client._paging import AsyncPageList, PageList, list_request
from sharpness_client._poll import Poller, async_wait_for, wait_for
from sharpness_client._progress import Progress
from sharpness_client.resources._base import AsyncResource, Resource
from sharpness_client.types import JobStatus, Page

R = TypeVar("R", bound=BaseModel)


def _cancel_request(path: str, id: str) -> Request:
    """Cancelling twice is cancelling once (a cancelled run answers 200 again), so a cancel
    whose answer was lost is retried without a key."""
    return Request("POST", f"{path}/{id}/cancel", repeatable=True)


class Runs(Resource[R]):
    def _page(self) -> type[Page[R]]:
        return Page[self.record]  # type: ignore[name-defined]

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
        return self._send(_cancel_request(self.path, id))

    def wait(
        self,
        id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        progress: bool | Progress = False,
        raise_on_failure: bool = True,
        raise_on_not_converged: bool = False,
    ) -> R:
        """Poll until the run is succeeded, failed or cancelled and return it; `progress`
        shows each measure's (a trajectory: each checkpoint's) iterations as they come.

        Raises JobFailedError if it failed (unless `raise_on_failure=False`) and
        JobTimeoutError after `timeout` seconds (the run goes on). A result that did not
        converge (a budget stopped it: `diagnostics.limited_by`) warns NotConvergedWarning,
        naming the measure, the budget and the fix; `raise_on_not_converged=True` raises
        NotConvergedError instead (its `.job` holds the values)."""
        poll = Poller(timeout, poll_interval, progress, raise_on_failure, raise_on_not_converged)
        return wait_for(lambda: self.get(id), poll)


class AsyncRuns(AsyncResource[R]):
    def _page(self) -> type[Page[R]]:
        return Page[self.record]  # type: ignore[name-defined]

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
        return await self._send(_cancel_request(self.path, id))

    async def wait(
        self,
        id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        progress: bool | Progress = False,
        raise_on_failure: bool = True,
        raise_on_not_converged: bool = False,
    ) -> R:
        poll = Poller(timeout, poll_interval, progress, raise_on_failure, raise_on_not_converged)
        return await async_wait_for(lambda: self.get(id), poll)

"""What `client.jobs` and `client.trajectories` share: submit a spec, read, list
(auto-paginating), cancel and wait for a run. Each subclass names its path and record model
and adds `create`, which builds its spec (`_spec.py`) and posts it (`_base.create_request`).
`cancel` and `wait` are written once for both clients (`_RunMethods`); each client's resource
supplies the poll loop (`_wait`: sleeping, or awaiting), which starts the `Poller`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from sharpness_client._http import Request
from sharpness_client._paging import AsyncPageList, PageList, list_request
from sharpness_client._poll import Poller, async_wait_for, wait_for
from sharpness_client._progress import Progress
from sharpness_client.resources._base import AsyncResource, Awaiting, Out, Resource, Shared
from sharpness_client.types import JobStatus, Page

R = TypeVar("R", bound=BaseModel)


def _cancel_request(path: str, id: str) -> Request:
    """Cancelling twice is cancelling once (a cancelled run answers 200 again), so a cancel
    whose answer was lost is retried without a key."""
    return Request("POST", f"{path}/{id}/cancel", repeatable=True)


class _RunMethods(Shared[Out]):
    """Runs' and AsyncRuns' cancel and wait."""

    if TYPE_CHECKING:  # the resource's own, found after this class at run time

        def get(self, id: str) -> Out: ...

        def _wait(self, get: Callable[[], Out], *poll: Any) -> Out: ...

    def cancel(self, id: str) -> Out:
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
    ) -> Out:
        """Poll until the run is succeeded, failed or cancelled and return it; `progress`
        shows each measure's (a trajectory: each checkpoint's) iterations as they come.

        Raises JobFailedError if it failed (unless `raise_on_failure=False`) and
        JobTimeoutError after `timeout` seconds (the run goes on). A result that did not
        converge (a budget stopped it: `diagnostics.limited_by`) warns NotConvergedWarning,
        naming the measure, the budget and the fix; `raise_on_not_converged=True` raises
        NotConvergedError instead (its `.job` holds the values)."""
        poll = (timeout, poll_interval, progress, raise_on_failure, raise_on_not_converged)
        return self._wait(lambda: self.get(id), *poll)


class Runs(_RunMethods[R], Resource[R]):
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

    def _wait(self, get: Callable[[], R], *poll: Any) -> R:
        return wait_for(get, Poller(*poll))


class AsyncRuns(_RunMethods[Awaiting[R]], AsyncResource[R]):
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

    async def _wait(self, get: Callable[[], Awaitable[R]], *poll: Any) -> R:
        # the Poller (its deadline, its progress bar) starts when the wait is awaited
        return await async_wait_for(get, Poller(*poll))

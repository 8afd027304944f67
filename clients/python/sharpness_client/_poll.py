"""Waiting for a run (a job or a trajectory) to finish: one schedule for `wait`, sync or async.

Polling starts fast (short runs finish in a second) and slows to the caller's interval; past
`timeout` seconds JobTimeoutError (the run goes on), on failure JobFailedError unless
`raise_on_failure=False`. A finished run holding a result that did not converge (a budget
stopped it) warns NotConvergedWarning, or raises NotConvergedError with
`raise_on_not_converged=True`; a cancelled run is returned as it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import sharpness_client._converged as _converged
from sharpness_client._progress import Progress
from sharpness_client.errors import JobFailedError, JobTimeoutError
from sharpness_client.types import JobStatus

FIRST_POLL_S = 0.2
POLL_GROWTH = 1.5

R = TypeVar("R")


class Poller:
    """The waiting schedule, deadline and optional progress bar of one `wait`."""

    def __init__(
        self,
        timeout: float | None,
        interval: float,
        progress: bool | Progress = False,
        raise_on_failure: bool = True,
        raise_on_not_converged: bool = False,
    ) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout, self.interval = timeout, interval
        self.raise_on_failure = raise_on_failure
        self.raise_on_not_converged = raise_on_not_converged
        self.next_sleep = min(FIRST_POLL_S, interval)
        self.bar = progress if isinstance(progress, Progress) else Progress() if progress else None

    def next_wait(self, run: Any) -> float:
        """Seconds to sleep before the next poll; -1 when `run` is finished."""
        if self.bar is not None:
            self.bar.update(run)
        if run.status.terminal:
            if self.raise_on_failure and run.status == JobStatus.failed:
                raise JobFailedError(run)
            if run.status != JobStatus.cancelled:
                _converged.check(run, self.raise_on_not_converged)
            return -1.0
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise JobTimeoutError(run, self.timeout or 0.0)
        wait = self.next_sleep
        if self.deadline is not None:
            wait = max(0.0, min(wait, self.deadline - time.monotonic()))
        self.next_sleep = min(self.interval, self.next_sleep * POLL_GROWTH)
        return wait

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def wait_for(get: Callable[[], R], poll: Poller) -> R:
    """Call `get` until what it returns is finished, sleeping on `poll`'s schedule."""
    try:
        while True:
            run = get()
            wait = poll.next_wait(run)
            if wait < 0:
                return run
            time.sleep(wait)
    finally:
        poll.close()


async def async_wait_for(get: Callable[[], Awaitable[R]], poll: Poller) -> R:
    """`wait_for` for an async `get`."""
    try:
        while True:
            run = await get()
            wait = poll.next_wait(run)
            if wait < 0:
                return run
            await asyncio.sleep(wait)
    finally:
        poll.close()

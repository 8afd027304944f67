"""`client.trajectories`: checkpoints of one training run → λmax·η/2 and eigenvector rotation.

t = client.trajectories.create(
    checkpoints=[(id0, 0.1), (id1, 0.1, 500), {"model": id2, "learning_rate": 0.05}],
    dataset=data_id, k=3)
t = client.trajectories.wait(t.id)
[p.stability_ratio for p in t.points], [o.subspace_overlap for o in t.overlaps]
client.trajectories.plot(t.id, "trajectory.png")
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

from sharpness_client._http import AsyncHTTP, Request, SyncHTTP
from sharpness_client._png import png_request, save
from sharpness_client._spec import DatasetLike, dataset_ref, model_id
from sharpness_client.errors import JobFailedError, JobTimeoutError
from sharpness_client.resources.jobs import FIRST_POLL_S, POLL_GROWTH
from sharpness_client.types import (
    JobStatus,
    ModelInfo,
    Trajectory,
    TrajectoryCheckpoint,
    TrajectoryPage,
    TrajectorySpec,
)

CheckpointLike = (
    TrajectoryCheckpoint
    | Mapping[str, Any]
    | tuple[str | ModelInfo, float]
    | tuple[str | ModelInfo, float, int | None]
)


def _checkpoint(c: CheckpointLike) -> TrajectoryCheckpoint:
    """(model, learning_rate[, step]), a mapping, or a TrajectoryCheckpoint."""
    if isinstance(c, TrajectoryCheckpoint):
        return c
    if isinstance(c, Mapping):
        return TrajectoryCheckpoint.model_validate(dict(c))
    model, lr, *rest = c
    step = rest[0] if rest else None
    return TrajectoryCheckpoint(model=model_id(model), learning_rate=lr, step=step)


def _spec(
    checkpoints: Iterable[CheckpointLike] | None,
    dataset: DatasetLike | None,
    spec: TrajectorySpec | None,
    batch_size: int | None,
    max_samples: int | None,
    **fields: Any,
) -> TrajectorySpec:
    if spec is not None:
        return spec
    if checkpoints is None or dataset is None:
        raise TypeError("give checkpoints= and dataset= (or a full spec=)")
    given = {k: v for k, v in fields.items() if v is not None}
    return TrajectorySpec(
        checkpoints=[_checkpoint(c) for c in checkpoints],
        dataset=dataset_ref(dataset, batch_size=batch_size, max_samples=max_samples),
        **given,
    )


def _create(spec: TrajectorySpec, idempotency_key: str | None) -> Request:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    body = spec.model_dump(mode="json", exclude_none=True)
    return Request("POST", "/v1/trajectories", json=body, headers=headers)


def _list(status: Any, labels: Mapping[str, str] | None, limit: int | None, cursor: str | None):
    params: list[tuple[str, Any]] = [("label", f"{k}:{v}") for k, v in (labels or {}).items()]
    if status is not None:
        params.append(("status", JobStatus(status).value))
    if limit is not None:
        params.append(("limit", limit))
    if cursor is not None:
        params.append(("cursor", cursor))
    return Request("GET", "/v1/trajectories", params=params)


class _Poll:
    def __init__(self, timeout: float | None, interval: float) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout, self.interval = timeout, interval
        self.next_sleep = min(FIRST_POLL_S, interval)

    def sleep_or_raise(self, t: Trajectory, raise_on_failure: bool) -> float:
        """Seconds to sleep before the next poll; -1 when `t` is finished."""
        if t.status.terminal:
            if raise_on_failure and t.status == JobStatus.failed:
                raise JobFailedError(t)  # type: ignore[arg-type]
            return -1.0
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise JobTimeoutError(t, self.timeout or 0.0)  # type: ignore[arg-type]
        wait = self.next_sleep
        if self.deadline is not None:
            wait = max(0.0, min(wait, self.deadline - time.monotonic()))
        self.next_sleep = min(self.interval, self.next_sleep * POLL_GROWTH)
        return wait


class TrajectoryList:
    """One page (`items`, `next_cursor`); iterating it walks every page that follows."""

    def __init__(self, page: TrajectoryPage, fetch: Callable[[str], TrajectoryPage]) -> None:
        self.page, self.items, self.next_cursor = page, page.items, page.next_cursor
        self._fetch = fetch

    def __iter__(self) -> Iterator[Trajectory]:
        page = self.page
        while True:
            yield from page.items
            if not page.next_cursor:
                return
            page = self._fetch(page.next_cursor)


class AsyncTrajectoryList:
    def __init__(self, page: TrajectoryPage, fetch: Callable[[str], Any]) -> None:
        self.page, self.items, self.next_cursor = page, page.items, page.next_cursor
        self._fetch = fetch

    async def __aiter__(self) -> AsyncIterator[Trajectory]:
        page = self.page
        while True:
            for t in page.items:
                yield t
            if not page.next_cursor:
                return
            page = await self._fetch(page.next_cursor)


class Trajectories:
    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def create(
        self,
        *,
        checkpoints: Iterable[CheckpointLike] | None = None,
        dataset: DatasetLike | None = None,
        k: int | None = None,
        tol: float | None = None,
        max_iter: int | None = None,
        loss: str | None = None,
        mode: str | None = None,
        device: str | None = None,
        labels: Mapping[str, str] | None = None,
        batch_size: int | None = None,
        max_samples: int | None = None,
        spec: TrajectorySpec | None = None,
        idempotency_key: str | None = None,
    ) -> Trajectory:
        """Submit checkpoints in training order (202: queued). Each checkpoint is
        `(model, learning_rate)`, `(model, learning_rate, step)`, a mapping or a
        TrajectoryCheckpoint; `dataset` as for jobs.create."""
        s = _spec(
            checkpoints, dataset, spec, batch_size, max_samples,
            k=k, tol=tol, max_iter=max_iter, loss=loss, mode=mode, device=device,
            labels=dict(labels) if labels else None,
        )  # fmt: skip
        resp = self._http.send(_create(s, idempotency_key))
        return Trajectory.model_validate(resp.json())

    def get(self, id: str) -> Trajectory:
        resp = self._http.send(Request("GET", f"/v1/trajectories/{id}"))
        return Trajectory.model_validate(resp.json())

    def list(
        self,
        *,
        status: str | JobStatus | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TrajectoryList:
        """Newest first; iterating the result follows every page."""

        def fetch(c: str | None) -> TrajectoryPage:
            resp = self._http.send(_list(status, labels, limit, c))
            return TrajectoryPage.model_validate(resp.json())

        return TrajectoryList(fetch(cursor), fetch)

    def cancel(self, id: str) -> Trajectory:
        """Queued: cancelled at once. Running: stopped between Lanczos iterations, keeping the
        points measured so far. Finished: ConflictError."""
        resp = self._http.send(Request("POST", f"/v1/trajectories/{id}/cancel"))
        return Trajectory.model_validate(resp.json())

    def wait(
        self,
        id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        raise_on_failure: bool = True,
    ) -> Trajectory:
        """Poll until succeeded, failed or cancelled. Raises JobFailedError on failure (unless
        `raise_on_failure=False`) and JobTimeoutError after `timeout` seconds."""
        poll = _Poll(timeout, poll_interval)
        while True:
            t = self.get(id)
            wait = poll.sleep_or_raise(t, raise_on_failure)
            if wait < 0:
                return t
            time.sleep(wait)

    def plot(self, id: str, path: str | os.PathLike[str] | None = None) -> bytes:
        """The trajectory's PNG (λmax·η/2 and the overlaps), written to `path` if given."""
        return save(self._http.send(png_request(f"/v1/trajectories/{id}/plot.png")).content, path)


class AsyncTrajectories:
    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    async def create(
        self,
        *,
        checkpoints: Iterable[CheckpointLike] | None = None,
        dataset: DatasetLike | None = None,
        k: int | None = None,
        tol: float | None = None,
        max_iter: int | None = None,
        loss: str | None = None,
        mode: str | None = None,
        device: str | None = None,
        labels: Mapping[str, str] | None = None,
        batch_size: int | None = None,
        max_samples: int | None = None,
        spec: TrajectorySpec | None = None,
        idempotency_key: str | None = None,
    ) -> Trajectory:
        s = _spec(
            checkpoints, dataset, spec, batch_size, max_samples,
            k=k, tol=tol, max_iter=max_iter, loss=loss, mode=mode, device=device,
            labels=dict(labels) if labels else None,
        )  # fmt: skip
        resp = await self._http.send(_create(s, idempotency_key))
        return Trajectory.model_validate(resp.json())

    async def get(self, id: str) -> Trajectory:
        resp = await self._http.send(Request("GET", f"/v1/trajectories/{id}"))
        return Trajectory.model_validate(resp.json())

    async def list(
        self,
        *,
        status: str | JobStatus | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> AsyncTrajectoryList:
        async def fetch(c: str | None) -> TrajectoryPage:
            resp = await self._http.send(_list(status, labels, limit, c))
            return TrajectoryPage.model_validate(resp.json())

        return AsyncTrajectoryList(await fetch(cursor), fetch)

    async def cancel(self, id: str) -> Trajectory:
        resp = await self._http.send(Request("POST", f"/v1/trajectories/{id}/cancel"))
        return Trajectory.model_validate(resp.json())

    async def wait(
        self,
        id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        raise_on_failure: bool = True,
    ) -> Trajectory:
        poll = _Poll(timeout, poll_interval)
        while True:
            t = await self.get(id)
            wait = poll.sleep_or_raise(t, raise_on_failure)
            if wait < 0:
                return t
            await asyncio.sleep(wait)

    async def plot(self, id: str, path: str | os.PathLike[str] | None = None) -> bytes:
        resp = await self._http.send(png_request(f"/v1/trajectories/{id}/plot.png"))
        return save(resp.content, path)

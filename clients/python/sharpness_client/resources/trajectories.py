"""`client.trajectories`: checkpoints of one training run → λmax·η/2 and eigenvector rotation.

t = client.trajectories.create(
    checkpoints=[(id0, 0.1), (id1, 0.1, 500), {"model": id2, "learning_rate": 0.05}],
    dataset=data_id, k=3, optimizer={"name": "sgd", "momentum": 0.9})
t = client.trajectories.wait(t.id)
[p.stability_ratio for p in t.points], [o.subspace_overlap for o in t.overlaps]
t.edge_analysis["summary"]
client.trajectories.plot(t.id, "trajectory.png")

Adam: upload each checkpoint's optimizer state and name it in the checkpoint —
state = client.trajectories.upload_optimizer_state(optimizer=opt, model=model)
checkpoints=[{"model": id0, "learning_rate": 1e-3, "optimizer_state": state.id}, ...],
optimizer={"name": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

from sharpness_client._files import FileInput, FileSource
from sharpness_client._http import AsyncHTTP, Request, SyncHTTP
from sharpness_client._png import png_request, save
from sharpness_client._spec import DatasetLike, dataset_ref, model_id
from sharpness_client.errors import JobFailedError, JobTimeoutError
from sharpness_client.resources.jobs import FIRST_POLL_S, POLL_GROWTH
from sharpness_client.types import (
    JobStatus,
    ModelInfo,
    OptimizerSpec,
    OptimizerStateInfo,
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


OptimizerLike = OptimizerSpec | Mapping[str, Any] | str


def _optimizer(o: OptimizerLike | None) -> OptimizerSpec | None:
    """ "sgd", {"name": "sgd", "momentum": 0.9} or an OptimizerSpec; None: not sent (gd)."""
    if o is None or isinstance(o, OptimizerSpec):
        return o
    if isinstance(o, str):
        return OptimizerSpec(name=o)  # type: ignore[arg-type]
    return OptimizerSpec.model_validate(dict(o))


def _state_request(
    file: FileInput | None,
    optimizer: Any,
    model: Any,
    exp_avg_sq: Mapping[str, Any] | None,
    step: int | None,
    filename: str | None,
) -> Request:
    from sharpness_client._optimizer_state import (
        optimizer_state_bytes,
        optimizer_state_from_torch,
    )

    if file is None:
        if optimizer is not None and model is not None:
            file = optimizer_state_from_torch(optimizer, model)
        elif exp_avg_sq is not None and step is not None:
            file = optimizer_state_bytes(exp_avg_sq, step)
        else:
            raise TypeError(
                "give a .safetensors file, or optimizer= and model= (a torch Adam and its "
                "model), or exp_avg_sq= (by parameter name) and step="
            )
        filename = filename or "optimizer_state.safetensors"
    source = FileSource.of(file, filename)
    return Request("POST", "/v1/trajectories/optimizer-states", file=source)


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
        optimizer: OptimizerLike | None = None,
        spec: TrajectorySpec | None = None,
        idempotency_key: str | None = None,
    ) -> Trajectory:
        """Submit checkpoints in training order (202: queued). Each checkpoint is
        `(model, learning_rate)`, `(model, learning_rate, step)`, a mapping or a
        TrajectoryCheckpoint; `dataset` as for jobs.create. `optimizer`: "gd" (the server's
        default), {"name": "sgd", "momentum": β, "nesterov": bool} or {"name": "adam",
        "beta1", "beta2", "eps"} — adam needs each checkpoint's `optimizer_state` (see
        upload_optimizer_state)."""
        s = _spec(
            checkpoints, dataset, spec, batch_size, max_samples,
            k=k, tol=tol, max_iter=max_iter, loss=loss, mode=mode, device=device,
            labels=dict(labels) if labels else None, optimizer=_optimizer(optimizer),
        )  # fmt: skip
        resp = self._http.send(_create(s, idempotency_key))
        return Trajectory.model_validate(resp.json())

    def get(self, id: str) -> Trajectory:
        resp = self._http.send(Request("GET", f"/v1/trajectories/{id}"))
        return Trajectory.model_validate(resp.json())

    def upload_optimizer_state(
        self,
        file: FileInput | None = None,
        *,
        optimizer: Any = None,
        model: Any = None,
        exp_avg_sq: Mapping[str, Any] | None = None,
        step: int | None = None,
        filename: str | None = None,
    ) -> OptimizerStateInfo:
        """Upload Adam's state at one checkpoint: a .safetensors (`step`,
        `exp_avg_sq.<name>`), or built from a torch Adam/AdamW `optimizer` and its `model`,
        or from `exp_avg_sq` by parameter name and `step` (numpy needed). Idempotent."""
        req = _state_request(file, optimizer, model, exp_avg_sq, step, filename)
        return OptimizerStateInfo.model_validate(self._http.send(req).json())

    def get_optimizer_state(self, id: str) -> OptimizerStateInfo:
        resp = self._http.send(Request("GET", f"/v1/trajectories/optimizer-states/{id}"))
        return OptimizerStateInfo.model_validate(resp.json())

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
        optimizer: OptimizerLike | None = None,
        spec: TrajectorySpec | None = None,
        idempotency_key: str | None = None,
    ) -> Trajectory:
        s = _spec(
            checkpoints, dataset, spec, batch_size, max_samples,
            k=k, tol=tol, max_iter=max_iter, loss=loss, mode=mode, device=device,
            labels=dict(labels) if labels else None, optimizer=_optimizer(optimizer),
        )  # fmt: skip
        resp = await self._http.send(_create(s, idempotency_key))
        return Trajectory.model_validate(resp.json())

    async def get(self, id: str) -> Trajectory:
        resp = await self._http.send(Request("GET", f"/v1/trajectories/{id}"))
        return Trajectory.model_validate(resp.json())

    async def upload_optimizer_state(
        self,
        file: FileInput | None = None,
        *,
        optimizer: Any = None,
        model: Any = None,
        exp_avg_sq: Mapping[str, Any] | None = None,
        step: int | None = None,
        filename: str | None = None,
    ) -> OptimizerStateInfo:
        req = _state_request(file, optimizer, model, exp_avg_sq, step, filename)
        return OptimizerStateInfo.model_validate((await self._http.send(req)).json())

    async def get_optimizer_state(self, id: str) -> OptimizerStateInfo:
        resp = await self._http.send(Request("GET", f"/v1/trajectories/optimizer-states/{id}"))
        return OptimizerStateInfo.model_validate(resp.json())

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

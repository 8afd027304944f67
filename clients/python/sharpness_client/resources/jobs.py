"""`client.jobs`: submit, read, list (auto-paginating), cancel, and wait with progress."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

from sharpness_client._http import AsyncHTTP, Request, SyncHTTP
from sharpness_client._png import png_request, save
from sharpness_client._progress import Progress
from sharpness_client._spec import DatasetLike, MeasureLike, build_spec
from sharpness_client.errors import JobFailedError, JobTimeoutError
from sharpness_client.types import Job, JobPage, JobSpec, JobStatus, ModelInfo

# Polling starts fast (short jobs finish in a second) and slows to the caller's interval.
FIRST_POLL_S = 0.2
POLL_GROWTH = 1.5


def _create(spec: JobSpec, idempotency_key: str | None) -> Request:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    # only what the caller set: fields left out take the server's defaults (GET /openapi.json)
    body = spec.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    return Request("POST", "/v1/jobs", json=body, headers=headers)


def _list(
    status: str | JobStatus | None,
    labels: Mapping[str, str] | None,
    limit: int | None,
    cursor: str | None,
) -> Request:
    params: list[tuple[str, Any]] = [("label", f"{k}:{v}") for k, v in (labels or {}).items()]
    if status is not None:
        params.append(("status", JobStatus(status).value))
    if limit is not None:
        params.append(("limit", limit))
    if cursor is not None:
        params.append(("cursor", cursor))
    return Request("GET", "/v1/jobs", params=params)


def _spec_from(model: Any, dataset: Any, measures: Any, spec: JobSpec | None, **kw) -> JobSpec:
    if spec is not None:
        return spec
    if model is None or dataset is None or measures is None:
        raise TypeError("give model=, dataset= and measures= (or a full spec=)")
    return build_spec(model, dataset, measures, **kw)


def _done(job: Job, raise_on_failure: bool) -> Job:
    if raise_on_failure and job.status == JobStatus.failed:
        raise JobFailedError(job)
    return job


class _Poll:
    """The waiting schedule and deadline shared by the sync and async `wait`."""

    def __init__(self, timeout: float | None, interval: float, progress: bool | Progress) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout
        self.interval = interval
        self.next_sleep = min(FIRST_POLL_S, interval)
        self.bar = progress if isinstance(progress, Progress) else Progress() if progress else None

    def sleep_or_raise(self, job: Job) -> float:
        if self.bar is not None:
            self.bar.update(job)
        if job.status.terminal:
            return -1.0
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise JobTimeoutError(job, self.timeout or 0.0)
        wait = self.next_sleep
        if self.deadline is not None:
            wait = max(0.0, min(wait, self.deadline - time.monotonic()))
        self.next_sleep = min(self.interval, self.next_sleep * POLL_GROWTH)
        return wait

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class JobList:
    """One page (`items`, `next_cursor`); iterating it walks every page that follows."""

    def __init__(self, page: JobPage, fetch: Callable[[str], JobPage]) -> None:
        self.page = page
        self.items = page.items
        self.next_cursor = page.next_cursor
        self._fetch = fetch

    def __iter__(self) -> Iterator[Job]:
        page = self.page
        while True:
            yield from page.items
            if not page.next_cursor:
                return
            page = self._fetch(page.next_cursor)


class AsyncJobList:
    def __init__(self, page: JobPage, fetch: Callable[[str], Any]) -> None:
        self.page = page
        self.items = page.items
        self.next_cursor = page.next_cursor
        self._fetch = fetch

    async def __aiter__(self) -> AsyncIterator[Job]:
        page = self.page
        while True:
            for job in page.items:
                yield job
            if not page.next_cursor:
                return
            page = await self._fetch(page.next_cursor)


class Jobs:
    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def create(
        self,
        *,
        model: str | ModelInfo | None = None,
        dataset: DatasetLike | None = None,
        measures: Iterable[MeasureLike] | None = None,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        loss: str | None = None,
        mode: str | None = None,
        device: str | None = None,
        labels: Mapping[str, str] | None = None,
        batch_size: int | None = None,
        max_samples: int | None = None,
        eval_dataset: DatasetLike | None = None,
        initial_model: str | ModelInfo | None = None,
        output_key: str | None = None,
        class_dim: int | None = None,
        spec: JobSpec | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit a job (202: queued). Without `idempotency_key` one is generated and reused
        on retries, so a lost answer never makes a second job. `eval_dataset` (held-out data,
        same forms as `dataset`) adds test metrics and the gap to `evaluation`;
        `initial_model` (an uploaded id) is w₀ for weight_norms and pacbayes_bound;
        `output_key` picks the logits among a tuple/dict output, `class_dim` (-1 or 1) the
        class dimension of sequence outputs when the shapes leave it open."""
        kw = dict(loss=loss, mode=mode, device=device, labels=labels, params=params)
        kw.update(eval_dataset=eval_dataset, initial_model=initial_model)
        kw.update(output_key=output_key, class_dim=class_dim)
        job_spec = _spec_from(
            model, dataset, measures, spec, batch_size=batch_size, max_samples=max_samples, **kw
        )
        return Job.model_validate(self._http.send(_create(job_spec, idempotency_key)).json())

    def get(self, id: str) -> Job:
        return Job.model_validate(self._http.send(Request("GET", f"/v1/jobs/{id}")).json())

    def list(
        self,
        *,
        status: str | JobStatus | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobList:
        """Newest first. `for job in client.jobs.list(...)` follows every page."""

        def fetch(c: str | None) -> JobPage:
            resp = self._http.send(_list(status, labels, limit, c))
            return JobPage.model_validate(resp.json())

        return JobList(fetch(cursor), fetch)

    def cancel(self, id: str) -> Job:
        """Queued: cancelled at once. Running: `cancel_requested`, the worker stops it soon
        (`wait` for status cancelled). Finished: ConflictError."""
        return Job.model_validate(self._http.send(Request("POST", f"/v1/jobs/{id}/cancel")).json())

    def wait(
        self,
        id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        progress: bool | Progress = False,
        raise_on_failure: bool = True,
    ) -> Job:
        """Poll until the job is succeeded, failed or cancelled and return it.

        Raises JobFailedError if it failed (unless `raise_on_failure=False`) and
        JobTimeoutError after `timeout` seconds (the job goes on running)."""
        poll = _Poll(timeout, poll_interval, progress)
        try:
            while True:
                job = self.get(id)
                wait = poll.sleep_or_raise(job)
                if wait < 0:
                    return _done(job, raise_on_failure)
                time.sleep(wait)
        finally:
            poll.close()

    def plot(
        self, id: str, name: str = "spectral_density", path: str | os.PathLike[str] | None = None
    ) -> bytes:
        """A picture of a finished job's result as PNG bytes, written to `path` if given.
        `name`: "spectral_density". NotFoundError when the job has no such result,
        ConflictError while it is still queued or running."""
        return save(self._http.send(png_request(f"/v1/jobs/{id}/plots/{name}.png")).content, path)


class AsyncJobs:
    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    async def create(
        self,
        *,
        model: str | ModelInfo | None = None,
        dataset: DatasetLike | None = None,
        measures: Iterable[MeasureLike] | None = None,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        loss: str | None = None,
        mode: str | None = None,
        device: str | None = None,
        labels: Mapping[str, str] | None = None,
        batch_size: int | None = None,
        max_samples: int | None = None,
        eval_dataset: DatasetLike | None = None,
        initial_model: str | ModelInfo | None = None,
        output_key: str | None = None,
        class_dim: int | None = None,
        spec: JobSpec | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        kw = dict(loss=loss, mode=mode, device=device, labels=labels, params=params)
        kw.update(eval_dataset=eval_dataset, initial_model=initial_model)
        kw.update(output_key=output_key, class_dim=class_dim)
        job_spec = _spec_from(
            model, dataset, measures, spec, batch_size=batch_size, max_samples=max_samples, **kw
        )
        resp = await self._http.send(_create(job_spec, idempotency_key))
        return Job.model_validate(resp.json())

    async def get(self, id: str) -> Job:
        return Job.model_validate((await self._http.send(Request("GET", f"/v1/jobs/{id}"))).json())

    async def list(
        self,
        *,
        status: str | JobStatus | None = None,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> AsyncJobList:
        async def fetch(c: str | None) -> JobPage:
            resp = await self._http.send(_list(status, labels, limit, c))
            return JobPage.model_validate(resp.json())

        return AsyncJobList(await fetch(cursor), fetch)

    async def cancel(self, id: str) -> Job:
        resp = await self._http.send(Request("POST", f"/v1/jobs/{id}/cancel"))
        return Job.model_validate(resp.json())

    async def wait(
        self,
        id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        progress: bool | Progress = False,
        raise_on_failure: bool = True,
    ) -> Job:
        poll = _Poll(timeout, poll_interval, progress)
        try:
            while True:
                job = await self.get(id)
                wait = poll.sleep_or_raise(job)
                if wait < 0:
                    return _done(job, raise_on_failure)
                await asyncio.sleep(wait)
        finally:
            poll.close()

    async def plot(
        self, id: str, name: str = "spectral_density", path: str | os.PathLike[str] | None = None
    ) -> bytes:
        resp = await self._http.send(png_request(f"/v1/jobs/{id}/plots/{name}.png"))
        return save(resp.content, path)

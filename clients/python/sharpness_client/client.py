"""`Client` and `AsyncClient`: one object, the API's resources as attributes.

    client = Client()                      # SHARPNESS_URL, SHARPNESS_API_KEY
    job = client.measure(model, (X, y), measures=["lambda_max", "trace"])

`measure` is the whole path in one call (upload, submit, wait); the resources are there for
everything else. Both clients are context managers that close their connection pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic

import httpx

from sharpness_client._http import DEFAULT_TIMEOUT, AsyncHTTP, SyncHTTP
from sharpness_client._inputs import Plan, measure_plans, names_for
from sharpness_client._progress import Progress
from sharpness_client._spec import MeasureLike, dataset_ref
from sharpness_client.errors import JobCancelledError
from sharpness_client.resources._base import Awaiting, Out
from sharpness_client.resources.datasets import AsyncDatasets, Datasets
from sharpness_client.resources.jobs import AsyncJobs, Jobs
from sharpness_client.resources.models import AsyncModels, Models
from sharpness_client.resources.queue import AsyncMeasures, AsyncQueue, Measures, Queue
from sharpness_client.resources.studies import AsyncStudies, Studies
from sharpness_client.resources.trajectories import AsyncTrajectories, Trajectories
from sharpness_client.types import DatasetInfo, Job, JobStatus, ModelInfo

DEFAULT_MAX_RETRIES = 3


def _finished(job: Job) -> Job:
    if job.status == JobStatus.cancelled:
        raise JobCancelledError(job)
    return job


def _outputs(spec: dict[str, Any], output_key: str | None, class_dim: int | None) -> None:
    if output_key is not None:
        spec["output_key"] = output_key
    if class_dim is not None:
        spec["class_dim"] = class_dim


#: `measure`'s inputs_key and targets_key, which name a dataset's arrays
Names = tuple[Any, str | None]


def _reference(plan: Plan, got: Any, names: dict[str, Any]) -> Any:
    """What a job's spec names for a measured input: the model (its id or its upload), or a
    dataset reference carrying the array names."""
    return got if plan.model else dataset_ref(got, **names)


class _ClientMethods(Generic[Out]):
    """`measure`, written once for `Client` and `AsyncClient`: it checks and prepares the
    inputs, then hands them to the client's `_measure`, which uploads, submits and waits (the
    answer itself from `Client`, a coroutine of it from `AsyncClient`)."""

    if TYPE_CHECKING:  # each client's own

        def _measure(
            self, plans: dict[str, Plan], names: Names, wait: dict[str, Any], spec: dict[str, Any]
        ) -> Out: ...

    def measure(
        self,
        model: Any,
        data: Any,
        measures: Iterable[MeasureLike],
        *,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        eval_data: Any = None,
        initial_model: Any = None,
        example_inputs: Any = None,
        inputs_key: str | list[str] | dict[str, str] | None = None,
        targets_key: str | None = None,
        output_key: str | None = None,
        class_dim: int | None = None,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        progress: bool | Progress = False,
        raise_on_not_converged: bool = False,
        **spec: Any,
    ) -> Out:
        """Upload what needs uploading, submit, wait, and return the finished job.

        `model`: a path/bytes/file, an nn.Module (exported; `example_inputs` default to two
        rows of `data`), or an uploaded id. `data`: a path/bytes/file, `(inputs, targets)`
        arrays or tensors, an uploaded id or a URI. `spec` takes the rest of jobs.create
        (loss, mode, device, labels, batch_size, max_samples). `inputs_key` and `targets_key`
        name the data's arrays (as for datasets.upload: one name, a list, or keyword → name;
        `targets_key="label"` for a Hugging Face dataset's labels): they go with the upload,
        so they are stored with it, and with the job's dataset reference, for `data` and
        `eval_data` alike (not for an `(inputs, targets)` pair, whose arrays the SDK names).
        `output_key` and `class_dim` pick the model's output and its class dimension, as in
        jobs.create. `eval_data`: held-out data in
        any form `data` takes (the job then reports test metrics and the generalization gap);
        `initial_model`: the model at initialisation (w₀) in any form `model` takes. Raises
        JobFailedError, JobCancelledError or JobTimeoutError when there are no results.

        A result a budget stopped before the requested accuracy (`converged` false,
        `diagnostics.limited_by` "iteration budget", "basis budget" or "time") warns
        NotConvergedWarning, naming the measure, the budget and the fix;
        `raise_on_not_converged=True` raises NotConvergedError instead. Results limited by
        the dtype's rounding ("float32 rounding") converged and warn nothing."""
        plans = measure_plans(model, data, eval_data, initial_model, example_inputs)
        _outputs(spec, output_key, class_dim)
        spec.update(measures=measures, params=params)
        wait = dict(timeout=timeout, poll_interval=poll_interval, progress=progress)
        wait.update(raise_on_not_converged=raise_on_not_converged)
        return self._measure(plans, (inputs_key, targets_key), wait, spec)


class Client(_ClientMethods[Job]):
    """Synchronous client. `base_url` defaults to SHARPNESS_URL (else http://127.0.0.1:8000),
    `api_key` to SHARPNESS_API_KEY; `timeout` is per HTTP request, `max_retries` per call."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._http = SyncHTTP(base_url, api_key, timeout, max_retries, http_client=http_client)
        self.base_url = self._http.base_url
        self.models = Models(self._http)
        self.datasets = Datasets(self._http)
        self.jobs = Jobs(self._http)
        self.studies = Studies(self._http)
        self.queue = Queue(self._http)
        self.measures = Measures(self._http)
        self.trajectories = Trajectories(self._http)

    def _upload(self, plan: Plan, names: dict[str, Any]) -> ModelInfo | DatasetInfo:
        if plan.model:
            return self.models.upload(plan.upload, filename=plan.filename)
        return self.datasets.upload(plan.upload, filename=plan.filename, **names)

    def _measure(
        self, plans: dict[str, Plan], names: Names, wait: dict[str, Any], spec: dict[str, Any]
    ) -> Job:
        for field, plan in plans.items():
            keys = {} if plan.model else names_for(plan, *names)
            spec[field] = _reference(plan, plan.ref or self._upload(plan, keys), keys)
        job = self.jobs.create(**spec)
        return _finished(self.jobs.wait(job.id, **wait))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_ClientMethods[Awaiting[Job]]):
    """The asyncio twin of `Client`, with the same resources and arguments."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._http = AsyncHTTP(base_url, api_key, timeout, max_retries, http_client=http_client)
        self.base_url = self._http.base_url
        self.models = AsyncModels(self._http)
        self.datasets = AsyncDatasets(self._http)
        self.jobs = AsyncJobs(self._http)
        self.studies = AsyncStudies(self._http)
        self.queue = AsyncQueue(self._http)
        self.measures = AsyncMeasures(self._http)
        self.trajectories = AsyncTrajectories(self._http)

    async def _upload(self, plan: Plan, names: dict[str, Any]) -> ModelInfo | DatasetInfo:
        if plan.model:
            return await self.models.upload(plan.upload, filename=plan.filename)
        return await self.datasets.upload(plan.upload, filename=plan.filename, **names)

    async def _measure(
        self, plans: dict[str, Plan], names: Names, wait: dict[str, Any], spec: dict[str, Any]
    ) -> Job:
        for field, plan in plans.items():
            keys = {} if plan.model else names_for(plan, *names)
            spec[field] = _reference(plan, plan.ref or await self._upload(plan, keys), keys)
        job = await self.jobs.create(**spec)
        return _finished(await self.jobs.wait(job.id, **wait))

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

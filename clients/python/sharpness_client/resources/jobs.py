"""`client.jobs`: submit and plot; read, list (auto-paginating), cancel and wait (with
progress) come from Runs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from sharpness_client._http import Request
from sharpness_client._spec import DatasetLike, MeasureLike, build_spec
from sharpness_client.resources._base import Awaiting, Out, Png, SharedPng, create_request
from sharpness_client.resources._runs import AsyncRuns, Runs
from sharpness_client.types import Comparison, Job, JobSpec, ModelInfo


def _id(job: str | Job) -> str:
    return job if isinstance(job, str) else job.id


def compare_request(job: str | Job, baseline: str | Job) -> Request:
    """GET the comparison of `job` with `baseline` (ids or Job records)."""
    return Request("GET", f"/v1/jobs/{_id(job)}/compare", params={"baseline": _id(baseline)})


def _spec(model: Any, dataset: Any, measures: Any, **options: Any) -> JobSpec:
    if model is None or dataset is None or measures is None:
        raise TypeError("give model=, dataset= and measures= (or a full spec=)")
    return build_spec(model, dataset, measures, **options)


class _JobMethods(SharedPng[Out, Png]):
    """Jobs' and AsyncJobs' create, get and plot."""

    path = "/v1/jobs"

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
        data_parallel: int | None = None,
        dropout_seed: int | None = None,
        spec: JobSpec | None = None,
        idempotency_key: str | None = None,
    ) -> Out:
        """Submit a job (202: queued). Without `idempotency_key` one is generated and reused
        on retries, so a lost answer never makes a second job. `eval_dataset` (held-out data,
        same forms as `dataset`) adds test metrics and the gap to `evaluation`;
        `initial_model` (an uploaded id) is w₀ for weight_norms and pacbayes_bound;
        `output_key` picks the logits among a tuple/dict output, `class_dim` (-1 or 1) the
        class dimension of sequence outputs when the shapes leave it open; `data_parallel`
        (processes, default 1) splits the data between that many processes of one worker
        (one GPU each for device "cuda"), the result's diagnostics.world_size says how many;
        `dropout_seed` (train mode) seeds the dropout masks, one per batch for every measure."""
        if spec is None:
            options: dict[str, Any] = dict(
                params=params, loss=loss, mode=mode, device=device, labels=labels
            )
            options.update(batch_size=batch_size, max_samples=max_samples)
            options.update(eval_dataset=eval_dataset, initial_model=initial_model)
            options.update(output_key=output_key, class_dim=class_dim)
            options.update(data_parallel=data_parallel, dropout_seed=dropout_seed)
            spec = _spec(model, dataset, measures, **options)
        return self._send(create_request(self.path, spec, idempotency_key))

    def get(self, id: str, *, study: str | None = None) -> Out:
        """A job. `study` names the study its `prediction` comes from (the job must be one of
        its members, else ValidationError naming query.study); without it a job in several
        studies gets each one's prediction in `prediction.studies` and no single gap
        (`prediction.selection` says which case applies)."""
        params = {"study": study} if study is not None else None
        return self._send(Request("GET", f"{self.path}/{id}", params=params))

    def plot(
        self, id: str, name: str = "spectral_density", path: str | os.PathLike[str] | None = None
    ) -> Png:
        """A picture of a finished job's result as PNG bytes, written to `path` if given.
        `name`: "spectral_density". NotFoundError when the job has no such result,
        ConflictError while it is still queued or running."""
        return self._png(f"{self.path}/{id}/plots/{name}.png", path)


class Jobs(_JobMethods[Job, bytes], Runs[Job]):
    record = Job

    def delete(self, id: str) -> None:
        """Delete a finished job's record. A queued or running one is kept: ConflictError
        (kind "not-finished"); cancel it first."""
        self._http.send(Request("DELETE", f"{self.path}/{id}"))

    def compare(self, job: str | Job, *, baseline: str | Job) -> Comparison:
        """`job` measured against `baseline` (both succeeded): per measure both have as a
        number, both values, the ratio, each error bar and whether the difference exceeds them
        (`exceeds_error_bars`), with caveats (other data, model format, parameters; a result
        that did not converge). NotFoundError for an unknown id, ConflictError (kind
        "not-finished") while either is unfinished or did not succeed, ValidationError when
        they have no measure in common."""
        return Comparison.model_validate(self._http.send(compare_request(job, baseline)).json())


class AsyncJobs(_JobMethods[Awaiting[Job], Awaiting[bytes]], AsyncRuns[Job]):
    record = Job

    async def delete(self, id: str) -> None:
        """As Jobs.delete."""
        await self._http.send(Request("DELETE", f"{self.path}/{id}"))

    async def compare(self, job: str | Job, *, baseline: str | Job) -> Comparison:
        """As Jobs.compare."""
        resp = await self._http.send(compare_request(job, baseline))
        return Comparison.model_validate(resp.json())

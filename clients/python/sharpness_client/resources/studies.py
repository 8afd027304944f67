"""`client.studies`: calibrate the measures on a sweep of related jobs, and read the verdict.

study = client.studies.create(
    name="lr sweep",
    jobs=[{"job": j.id, "hyperparameters": {"learning_rate": lr, "batch_size": 128},
           "test_accuracy": acc} for j, lr, acc in runs])
study = client.studies.get(study.id)
study.analysis.verdict                       # does any measure beat 1/lr, lr/bs, ‖w‖?
study.analysis.beats_baselines.beats         # significantly, after Holm, by > 1 LOO s.e.
client.jobs.get(job_id).prediction           # calibrated gap with its interval
client.studies.plot(study.id, "lambda_max", "scatter.png", baseline="1/learning_rate")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from sharpness_client._http import Request
from sharpness_client._paging import AsyncPageList, PageList, list_request
from sharpness_client._spec import given
from sharpness_client.resources._base import (
    AsyncResource,
    Awaiting,
    Out,
    Png,
    Resource,
    SharedPng,
    create_request,
)
from sharpness_client.types import Job, Study, StudyCreate, StudyJob, StudyPage, StudySummary

StudyJobLike = StudyJob | Mapping[str, Any] | Job | str


def _member(item: StudyJobLike) -> StudyJob:
    """A StudyJob, a mapping of its fields, a Job or a job id (no hyperparameters)."""
    if isinstance(item, StudyJob):
        return item
    if isinstance(item, Job):
        return StudyJob(job=item.id)
    if isinstance(item, str):
        return StudyJob(job=item)
    return StudyJob.model_validate(dict(item))


def _create(
    name: str,
    jobs: Iterable[StudyJobLike],
    target: str | None,
    level: float | None,
    idempotency_key: str | None,
) -> Request:
    members = [_member(j) for j in jobs]
    body = StudyCreate(name=name, jobs=members, **given(target=target, level=level))
    return create_request("/v1/studies", body, idempotency_key)


def _plot_path(id: str, measure: str, baseline: str | None) -> str:
    query = {"measure": measure} | ({"baseline": baseline} if baseline else {})
    return f"/v1/studies/{id}/plot.png?{urlencode(query)}"


class _StudyMethods(SharedPng[Out, Png]):
    """Studies' and AsyncStudies' create, get and plot."""

    path = "/v1/studies"

    def create(
        self,
        *,
        name: str,
        jobs: Iterable[StudyJobLike],
        target: str | None = None,
        level: float | None = None,
        idempotency_key: str | None = None,
    ) -> Out:
        """Group jobs into a study (201). `jobs`: StudyJob, {"job", "hyperparameters",
        "test_accuracy", "test_loss", "group"} mappings, Job objects or ids (members sharing a
        `group`, e.g. seeds of one configuration, are held out together). `target`:
        accuracy_gap (default) or loss_gap; `level`: interval coverage (default 0.9)."""
        return self._send(_create(name, jobs, target, level, idempotency_key))

    def get(self, id: str) -> Out:
        """Members' states and, once 4 have gaps, the analysis and its verdict."""
        return self._send(Request("GET", f"{self.path}/{id}"))

    def plot(
        self,
        id: str,
        measure: str,
        path: str | os.PathLike[str] | None = None,
        *,
        baseline: str | None = None,
    ) -> Png:
        """PNG of `measure` against the observed gaps (saved to `path` if given)."""
        return self._png(_plot_path(id, measure, baseline), path)


class Studies(_StudyMethods[Study, bytes], Resource[Study]):
    record = Study

    def list(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> PageList[StudySummary]:
        """Newest first (summaries); `for s in client.studies.list()` follows every page."""

        def fetch(c: str | None) -> StudyPage:
            return StudyPage.model_validate(
                self._http.send(list_request("/v1/studies", limit=limit, cursor=c)).json()
            )

        return PageList(fetch(cursor), fetch)

    def delete(self, id: str) -> None:
        """Delete the study (its jobs stay)."""
        self._http.send(Request("DELETE", f"/v1/studies/{id}"))


class AsyncStudies(_StudyMethods[Awaiting[Study], Awaiting[bytes]], AsyncResource[Study]):
    record = Study

    async def list(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> AsyncPageList[StudySummary]:
        async def fetch(c: str | None) -> StudyPage:
            return StudyPage.model_validate(
                (await self._http.send(list_request("/v1/studies", limit=limit, cursor=c))).json()
            )

        return AsyncPageList(await fetch(cursor), fetch)

    async def delete(self, id: str) -> None:
        await self._http.send(Request("DELETE", f"/v1/studies/{id}"))

"""client.studies (sync and async) against the real stack: uvicorn gateway, worker, private
redis-server. Finished jobs are written into the stack's Redis as a worker leaves them, so
the test spends its time on the study, not on training."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sharpness_client import AsyncClient, Client
from sharpness_client.errors import NotFoundError, ValidationError
from sharpness_client.types import Study, StudyJob, StudyPrediction
from tasks.store.local_redis import PrivateRedis
from tasks.store.records import JobStore
from tests import databases
from tests.integration.conftest import Stack, start_stack
from tests.studies.conftest import Jobs

pytestmark = pytest.mark.integration

STUDIES_DB = databases.STUDIES


@pytest.fixture(scope="module")
def stack(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(redis_server, STUDIES_DB, tmp_path_factory.mktemp("studies-service"))
    yield s
    s.stop()


def _members(stack: Stack) -> list[StudyJob]:
    jobs = Jobs(JobStore.from_url(stack.redis_url))
    members = []
    for i, lr in enumerate([0.1, 0.05, 0.03, 0.02, 0.01, 0.005]):
        gap = 0.002 / lr
        job = jobs.add({"lambda_max": 50 * gap + 0.01 * (-1) ** i}, evaluation={"accuracy": 1.0})
        hps = {"learning_rate": lr, "batch_size": 64}
        members.append(StudyJob(job=job, hyperparameters=hps, test_accuracy=1.0 - gap))
    return members


def test_studies_sync_and_async(stack: Stack) -> None:
    members = _members(stack)
    with Client(stack.url) as client:
        study = client.studies.create(name="sdk", jobs=members, level=0.8)
        assert isinstance(study, Study) and study.status == "ready"
        assert study.analysis is not None and study.analysis.best_measure == "lambda_max"
        assert "baselines" in study.analysis.verdict
        assert client.studies.get(study.id).analysis == study.analysis
        assert study.id in [s.id for s in client.studies.list()]
        pred = client.jobs.get(members[0].job).prediction
        assert pred is not None and pred.calibrated and pred.study == study.id
        assert pred.selection == "only_study" and [p.study for p in pred.studies] == [study.id]
        # a second study with the same job: no silent pick; study= names one
        other = client.studies.create(name="other", jobs=members[:4])
        pred = client.jobs.get(members[0].job).prediction
        assert pred.selection == "several_studies" and pred.gap is None
        assert {p.study for p in pred.studies} == {study.id, other.id}
        assert isinstance(pred.studies[0], StudyPrediction)
        pred = client.jobs.get(members[0].job, study=study.id).prediction
        assert pred.selection == "requested" and pred.calibrated and pred.study == study.id
        with pytest.raises(ValidationError, match="query.study"):
            client.jobs.get(members[5].job, study=other.id)
        client.studies.delete(other.id)
        png = client.studies.plot(study.id, "lambda_max", baseline="1/learning_rate")
        assert png.startswith(b"\x89PNG")
        with pytest.raises(ValidationError):
            client.studies.create(name="bad", jobs=["0" * 32])
        client.studies.delete(study.id)
        with pytest.raises(NotFoundError):
            client.studies.get(study.id)
        assert client.jobs.get(members[0].job).prediction.calibrated is False

    async def run() -> None:
        async with AsyncClient(stack.url) as client:
            study = await client.studies.create(
                name="async", jobs=[m.model_dump() for m in members]
            )
            assert (await client.studies.get(study.id)).members[0].state == "observed"
            job = await client.jobs.get(members[0].job, study=study.id)
            assert job.prediction.selection == "requested" and job.prediction.study == study.id
            assert study.id in [s.id async for s in await client.studies.list(limit=1)]
            await client.studies.delete(study.id)

    asyncio.run(run())

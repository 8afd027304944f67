"""The SDK against a real running service: gateway, Redis and a worker process."""

from __future__ import annotations

import asyncio
import uuid
import warnings

import numpy as np
import pytest

from sharpness_client import (
    AsyncClient,
    Client,
    ConflictError,
    JobFailedError,
    JobStatus,
    JobTimeoutError,
    NotConvergedError,
    NotConvergedWarning,
    NotFoundError,
    ValidationError,
)
from sharpness_client._convert import arrays_to_npz
from tests.sdk import models as M

pytestmark = pytest.mark.integration


def test_measure_module_matches_the_dense_hessian(service_url: str) -> None:
    model = M.mlp(seed=1)
    x, y = M.data(n=48)
    with Client() as client:
        job = client.measure(
            model,
            (x, y),
            measures=["lambda_max", "trace"],
            params={"lambda_max": {"tol": 1e-10}, "trace": {"num_hvps": 200}},
            device="cpu",
            batch_size=20,
            labels={"suite": "sdk"},
            timeout=120,
            poll_interval=0.2,
        )
    assert job.status == JobStatus.succeeded and job.error is None
    eig = M.dense_spectrum(model, x, y, batch=20)
    exact_max, exact_trace = float(eig.max()), float(eig.sum())
    got = job.value("lambda_max")
    assert abs(got - exact_max) <= 1e-6 * abs(exact_max), (got, exact_max)
    assert job.results["lambda_max"].converged is True
    assert job.results["lambda_max"].hvps and job.results["lambda_max"].seconds is not None
    # a budget beyond the dimension (39) lets the sketch span the space: near exact
    assert job.value("trace") == pytest.approx(exact_trace, rel=1e-6)
    assert job.spec.labels == {"suite": "sdk"} and job.device == "cpu"


def test_resources_round_trip(service_url: str, tmp_path) -> None:
    x, y = M.data(n=16, seed=3)
    with Client() as client:
        model = client.models.from_module(M.mlp(), x[:2])
        assert client.models.get(model.id) == model and model.format == "torch_export"
        data = client.datasets.from_arrays(x, y)
        assert data.num_examples == 16 and data.arrays["inputs"].shape == [16, M.IN]
        path = tmp_path / "d.npz"
        path.write_bytes(arrays_to_npz(x, y))
        assert client.datasets.upload(path).id == data.id  # the same bytes, the same id

        label = {"batch": uuid.uuid4().hex[:8]}
        ids = [
            client.jobs.create(model=model, dataset=data, measures=["trace"], labels=label).id
            for _ in range(3)
        ]
        for job_id in ids:
            client.jobs.wait(job_id, timeout=120, poll_interval=0.2)
        page = client.jobs.list(labels=label, limit=2)
        assert len(page.items) == 2 and page.next_cursor
        assert sorted(j.id for j in page) == sorted(ids)  # iterating follows the cursor
        assert [j.id for j in client.jobs.list(labels=label, status="failed")] == []

        with pytest.raises(ConflictError, match="already succeeded"):
            client.jobs.cancel(ids[0])
        with pytest.raises(NotFoundError):
            client.jobs.get(uuid.uuid4().hex)
        with pytest.raises(ValidationError) as info:
            client.jobs.create(model=model, dataset=data, measures=["no_such_measure"])
        assert "measures.0.name" in info.value.fields

        client.models.delete(model.id)
        with pytest.raises(NotFoundError):
            client.models.get(model.id)


def test_idempotency_key_returns_the_same_job(service_url: str) -> None:
    x, y = M.data(n=8, seed=4)
    key = uuid.uuid4().hex
    with Client() as client:
        model, data = client.models.from_module(M.mlp(), x[:2]), client.datasets.from_arrays(x, y)
        first = client.jobs.create(
            model=model, dataset=data, measures=["trace"], idempotency_key=key
        )
        second = client.jobs.create(
            model=model, dataset=data, measures=["trace"], idempotency_key=key
        )
        assert first.id == second.id
        with pytest.raises(ConflictError):
            client.jobs.create(
                model=model, dataset=data, measures=["lambda_max"], idempotency_key=key
            )


def test_failed_job_raises_with_the_workers_problem(service_url: str) -> None:
    x, y = M.data(n=8, features=M.IN + 2)  # the model takes 5 features, the data has 7
    with Client() as client:
        with pytest.raises(JobFailedError) as info:
            client.measure(
                M.mlp(),
                (x, y),
                ["lambda_max"],
                example_inputs=np.zeros((2, M.IN)),
                timeout=120,
                poll_interval=0.2,
            )
    assert info.value.job.status == JobStatus.failed
    assert info.value.problem is not None and info.value.problem.detail


def test_wait_times_out_then_cancel(service_url: str) -> None:
    x, y = M.data(n=8)
    with Client() as client:
        model, data = client.models.from_module(M.mlp(), x[:2]), client.datasets.from_arrays(x, y)
        # the test worker serves only the cpu queue: a cuda job stays queued
        job = client.jobs.create(model=model, dataset=data, measures=["trace"], device="cuda")
        with pytest.raises(JobTimeoutError) as info:
            client.jobs.wait(job.id, timeout=0.5, poll_interval=0.1)
        assert info.value.job.status == JobStatus.queued
        assert client.jobs.cancel(job.id).status == JobStatus.cancelled
        assert client.jobs.wait(job.id, timeout=5).status == JobStatus.cancelled
        queue = client.queue.get()
        assert {q.name for q in queue.queues} >= {"cpu", "gpu"}
        assert queue.workers and queue.workers[0].age_s is not None


def test_async_client_measures(service_url: str) -> None:
    x, y = M.data(n=24, seed=5)

    async def go():
        async with AsyncClient() as client:
            job = await client.measure(
                M.mlp(seed=2), (x, y), ["lambda_max"], timeout=120, poll_interval=0.2
            )
            listed = [j async for j in await client.jobs.list(limit=1)]
            return job, listed

    job, listed = asyncio.run(go())
    assert job.status == JobStatus.succeeded and job.value("lambda_max") > 0
    assert job.id in {j.id for j in listed}


def test_not_converged_warns_or_raises_and_converged_is_silent(service_url: str) -> None:
    x, y = M.data(n=48, seed=6)
    with Client() as client:
        model = client.models.from_module(M.mlp(seed=6), x[:2]).id
        data = client.datasets.from_arrays(x, y).id
        run = dict(device="cpu", timeout=120, poll_interval=0.2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # converged: no warning at all
            done = client.measure(model, data, ["lambda_max"], **run)
        assert done.results["lambda_max"].converged is True
        assert done.results["lambda_max"].limited_by in ("tolerance", "float64 rounding")

        # two Lanczos steps cannot reach the accuracy asked: the budget stopped it
        budget = {"lambda_max": {"max_iter": 2, "tol": 1e-12}}
        with pytest.warns(NotConvergedWarning, match="iteration budget") as caught:
            job = client.measure(model, data, ["lambda_max"], params=budget, **run)
        assert caught.list[0].filename == __file__
        assert "raise lambda_max.max_iter (now 2)" in str(caught.list[0].message)
        result = job.results["lambda_max"]
        assert result.converged is False and result.limited_by == "iteration budget"
        assert job.value("lambda_max") > 0  # the value is still returned

        with pytest.raises(NotConvergedError) as info:
            client.jobs.wait(job.id, raise_on_not_converged=True)
        assert info.value.limited_by == {"lambda_max": "iteration budget"}
        assert info.value.job.id == job.id
        with pytest.raises(NotConvergedError):
            client.measure(
                model, data, ["lambda_max"], params=budget, raise_on_not_converged=True, **run
            )

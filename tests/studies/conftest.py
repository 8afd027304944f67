"""The API tests' fixtures (an app on the session's private Redis, emptied per test; an
in-process TestClient), reused here, and a helper that writes finished jobs straight into the
job store: the study's analysis is what these tests are about, not the worker."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.contract.spec import JobSpec, JobStatus
from tasks.store.records import JobStore
from tests.api.conftest import api_redis_url, app, client, data_root, settings  # noqa: F401

DATASET = "b" * 64


class Jobs:
    """Writes job records as a worker would have left them."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.count = 0

    def add(
        self,
        results: dict[str, Any] | None = None,
        evaluation: dict[str, Any] | None = None,
        status: JobStatus = JobStatus.succeeded,
        model: str | None = None,
    ) -> str:
        """A job on `model`, by default a model of its own (jobs on one model are duplicates
        to a study)."""
        names = list(results or {"lambda_max": 0})
        self.count += 1
        spec = JobSpec.model_validate(
            {
                "model": model or f"{self.count:064x}",
                "dataset": {"id": DATASET},
                "measures": [{"name": n} for n in names if n in _KNOWN] or [{"name": "trace"}],
            }
        )
        job = self.store.create(spec, "cpu")
        if status == JobStatus.queued:
            return job.id
        self.store.mark_running(job.id, "test-worker", "cpu", {})
        if status == JobStatus.running:
            return job.id
        self.store.finish(
            job.id,
            status,
            results={k: {"value": v} for k, v in (results or {}).items()},
            evaluation=evaluation,
        )
        return job.id


_KNOWN = {"lambda_max", "trace", "frobenius", "top_eigenvalues", "adaptive_sharpness"}


@pytest.fixture
def jobs(request: pytest.FixtureRequest) -> Jobs:
    """The job store of the app the `client` fixture talks to."""
    return Jobs(request.getfixturevalue("app").state.jobs)

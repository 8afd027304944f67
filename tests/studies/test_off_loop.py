"""The analysis (seconds of numpy on a large study) never runs on the event loop: every route
that may miss the cache calls it from a worker thread, so one slow study does not stall the
gateway's other requests."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.studies import service
from tests.studies.conftest import Jobs


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each analysis ran on an event loop; the cache is emptied before each read."""
    seen: list[bool] = []
    analyse = service.analyse

    def recording(*args: Any) -> Any:
        seen.append(_on_event_loop())
        return analyse(*args)

    monkeypatch.setattr(service, "analyse", recording)
    return seen


def test_every_route_that_analyses_runs_it_off_the_event_loop(
    client: TestClient, jobs: Jobs, threads: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    members = [
        {
            "job": jobs.add({"lambda_max": float(k)}, evaluation={"accuracy": 0.99}),
            "hyperparameters": {"learning_rate": 0.1 / (k + 1), "batch_size": 32},
            "test_accuracy": 0.99 - 0.01 * k,
        }
        for k in range(5)
    ]
    job = members[0]["job"]
    study = client.post("/v1/studies", json={"name": "s", "jobs": members})
    assert study.status_code == 201, study.text
    reads = [
        f"/v1/studies/{study.json()['id']}",
        f"/v1/studies/{study.json()['id']}/plot.png?measure=lambda_max",
        f"/v1/jobs/{job}",
        f"/v1/jobs/{job}?study={study.json()['id']}",
        "/v1/jobs",
    ]
    for path in reads:
        monkeypatch.setattr(service, "_cache", OrderedDict())
        before = len(threads)
        assert client.get(path).status_code == 200, path
        assert len(threads) > before, f"{path} did not analyse"
    assert threads and not any(threads), threads

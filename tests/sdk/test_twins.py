"""Client and AsyncClient are one SDK: every method written once for both (resources._base.Shared,
the runs' cancel and wait, measure's preparation) sends the same requests and answers the same
records or errors from either. Both clients talk to one gateway served in this process (no
worker), on the API tests' database of the suite's private Redis."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import uvicorn
from fastapi import FastAPI

from service.main import create_app
from sharpness_client import AsyncClient, Client, JobStatus
from sharpness_client.errors import SharpnessError
from tasks.settings import Settings
from tasks.store.local_redis import PrivateRedis
from tests import databases
from tests.api import files


@pytest.fixture
def app(redis_server: PrivateRedis, tmp_path: Path) -> FastAPI:
    url = f"redis://127.0.0.1:{redis_server.port}/{databases.API}"
    redis.Redis.from_url(url).flushdb()
    return create_app(Settings(redis_url=url, data_dir=tmp_path / "var"))


@pytest.fixture
def clients(app: FastAPI) -> Iterator[tuple[Client, str]]:
    """A Client and the URL of the app, served by uvicorn on a free port in a thread (an
    AsyncClient is opened per call: each runs in an event loop of its own)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the gateway did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        with Client(url) as sync:
            yield sync, url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except SharpnessError as e:
        return type(e).__name__


def _awaited(url: str, call: Callable[[Any], Any]) -> Any:
    async def run() -> Any:
        async with AsyncClient(url) as aio:
            return await call(aio)

    return asyncio.run(run())


def _both(clients: tuple[Client, str], call: Callable[[Any], Any]) -> Any:
    """What `call(client)` answers from the sync client and, awaited, from the async one:
    the same, or the same error class."""
    sync, url = clients
    got = _outcome(lambda: call(sync)), _outcome(lambda: _awaited(url, call))
    assert got[0] == got[1], got
    return got[0]


def test_shared_methods_answer_alike(clients: tuple[Client, str], tmp_path: Path) -> None:
    x = np.zeros((8, 4), dtype=np.float32)
    y = np.zeros(8, dtype=np.int64)
    dataset = _both(clients, lambda c: c.datasets.from_arrays(x, y)).id
    model = _both(clients, lambda c: c.models.upload(files.pt2_bytes(tmp_path))).id
    folder = tmp_path / "checkpoint"  # a save_pretrained folder the gateway refuses
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    refused = _both(clients, lambda c: c.models.upload(folder))
    assert isinstance(refused, str) and refused.endswith("Error"), refused
    assert _both(clients, lambda c: c.models.get(model)).id == model

    def submit(c: Any) -> Any:
        return c.jobs.create(model=model, dataset=dataset, measures=["lambda_max"], device="cpu")

    sync, url = clients
    jobs = [submit(sync), _awaited(url, submit)]
    assert [j.status for j in jobs] == [JobStatus.queued] * 2
    for job in jobs:
        got = _both(clients, lambda c, j=job.id: c.jobs.get(j))
        assert got.id == job.id and got.spec == job.spec
    assert _both(clients, lambda c: c.jobs.plot(jobs[0].id)) == "NotFoundError"  # no density
    cancelled = [sync.jobs.cancel(jobs[0].id), _awaited(url, lambda c: c.jobs.cancel(jobs[1].id))]
    assert [j.status for j in cancelled] == [JobStatus.cancelled] * 2
    done = _both(clients, lambda c: c.jobs.wait(jobs[0].id, timeout=5))
    assert done.status == JobStatus.cancelled

    state = _both(
        clients,
        lambda c: c.trajectories.upload_optimizer_state(
            exp_avg_sq={"0.weight": np.ones((3, 4), dtype=np.float32)}, step=3
        ),
    )
    assert _both(clients, lambda c: c.trajectories.get_optimizer_state(state.id)) == state
    assert _both(clients, lambda c: c.trajectories.plot("0" * 32)) == "NotFoundError"

    study = _both(clients, lambda c: c.studies.get("0" * 32))
    assert study == "NotFoundError"
    made = [
        sync.studies.create(name="twins", jobs=[j.id for j in jobs]),
        _awaited(url, lambda c: c.studies.create(name="twins", jobs=[j.id for j in jobs])),
    ]
    assert made[0].members == made[1].members
    assert _both(clients, lambda c: c.studies.plot(made[0].id, "lambda_max")) == "ConflictError"

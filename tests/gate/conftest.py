"""Fixtures for the gate's tests: the API tests' in-process app (tests/api/conftest.py, on its
database), and a real service (gateway and worker) on a database of its own for the
command-line gate end to end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tasks.store.local_redis import PrivateRedis
from tests import databases
from tests.api.conftest import (  # noqa: F401 (fixtures)
    api_redis_url,
    app,
    client,
    data_root,
    dataset_id,
    model_id,
    pt2,
    settings,
)
from tests.integration.conftest import Stack, start_stack


@pytest.fixture(scope="session")
def gate_stack(
    redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    s = start_stack(redis_server, databases.GATE, tmp_path_factory.mktemp("gate-service"))
    yield s
    s.stop()

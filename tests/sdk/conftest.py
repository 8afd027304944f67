"""A real service for the SDK's end-to-end tests: the integration suite's stack (private
redis-server, `python -m tasks.worker`, uvicorn gateway), on a Redis database of its own so
these jobs never mix with the integration tests' ones."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tasks.store.local_redis import PrivateRedis
from tests import databases
from tests.integration.conftest import Stack, start_stack

SDK_DB = databases.SDK


@pytest.fixture(scope="session")
def sdk_stack(
    redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    s = start_stack(redis_server, SDK_DB, tmp_path_factory.mktemp("sdk-service"))
    yield s
    s.stop()


@pytest.fixture
def service_url(sdk_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> str:
    """The gateway's URL, also set as SHARPNESS_URL for clients built without arguments."""
    monkeypatch.setenv("SHARPNESS_URL", sdk_stack.url)
    monkeypatch.delenv("SHARPNESS_API_KEY", raising=False)
    return sdk_stack.url

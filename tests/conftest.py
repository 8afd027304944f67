"""Fixtures shared by every test directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# The worker runs with every torch.load weights-only; the test process (which imports the
# loaders directly) does too, set before any test module imports torch.
os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"

import pytest

from tasks.store.local_redis import PrivateRedis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A private redis-server on a free port for the whole session (never a shared one)."""
    server = PrivateRedis(tmp_path_factory.mktemp("redis"), aof=True).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: PrivateRedis) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def sharded_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2's save_pretrained folder in several safetensors shards
    (tests.model_refs.sharded_gpt2), made once: copy it before changing it."""
    # deferred: torch and transformers load only for the tests that use it
    from tests import model_refs

    return model_refs.sharded_gpt2(tmp_path_factory.mktemp("gpt2") / "gpt2")

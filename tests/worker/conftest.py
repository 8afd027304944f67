"""Worker test fixtures: a worker runtime on the session's private Redis and a blob store in a
temporary directory, as a worker process would hold them (no Celery worker runs here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.settings import Settings
from tasks.worker.runtime import WorkerRuntime

HOSTNAME = "test-worker@here"


@pytest.fixture
def rt(redis_url: str, tmp_path: Path) -> WorkerRuntime:
    settings = Settings(redis_url=redis_url, data_dir=tmp_path, heartbeat_s=1)
    return WorkerRuntime.create(HOSTNAME, settings)

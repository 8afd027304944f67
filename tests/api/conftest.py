"""API test fixtures: an app on the session's private Redis (its own database, emptied per
test) and a temporary data directory; requests go through fastapi's TestClient (in process,
not over a socket)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.main import create_app
from tasks.settings import Settings
from tasks.store.local_redis import PrivateRedis
from tests import databases
from tests.api import files

API_DB = databases.API


@pytest.fixture
def api_redis_url(redis_server: PrivateRedis) -> str:
    url = f"redis://127.0.0.1:{redis_server.port}/{API_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data-root"
    root.mkdir()
    return root


@pytest.fixture
def settings(api_redis_url: str, tmp_path: Path, data_root: Path) -> Settings:
    return Settings(
        redis_url=api_redis_url,
        data_dir=tmp_path / "var",
        data_root=data_root,
        uri_schemes=["file"],
        max_upload_bytes=8 * 1024 * 1024,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="session")
def pt2(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return files.pt2_bytes(tmp_path_factory.mktemp("pt2"))


@pytest.fixture
def model_id(client: TestClient, pt2: bytes) -> str:
    r = client.post("/v1/models", files={"file": ("model.pt2", pt2)})
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


@pytest.fixture
def dataset_id(client: TestClient) -> str:
    r = client.post("/v1/datasets", files={"file": ("data.npz", files.npz_bytes())})
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]

"""The gateway's install pulls no torch: pyproject.toml's base dependencies are the gateway's and
the torch-free rooms' of tasks/, the worker's are the `worker` extra; and the gateway builds and
serves requests in a process where torch and the worker extra cannot be imported at all."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import redis

from tasks.store.local_redis import PrivateRedis
from tests import databases

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
TORCH = {"torch", "torchvision", "torchaudio", "transformers"}


def _name(requirement: str) -> str:
    """The distribution a requirement names, normalised (PEP 503)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


BASE = {_name(r) for r in PROJECT["dependencies"]}
WORKER = {_name(r) for r in PROJECT["optional-dependencies"]["worker"]}


def test_base_dependencies_hold_no_torch() -> None:
    assert not BASE & TORCH, f"the gateway's install would pull {sorted(BASE & TORCH)}"
    assert {"torch", "transformers"} <= WORKER


def test_installs_name_the_extras() -> None:
    """make install sets up a worker and the tests; the Dockerfile's gateway target installs
    the base only and its worker target the worker extra."""
    assert "-c constraints.txt -e '.[worker,dev]'" in (ROOT / "Makefile").read_text()
    stages = re.split(r"^FROM ", (ROOT / "Dockerfile").read_text(), flags=re.M)[1:]
    installs = {
        stage.split()[2]: re.findall(r"^RUN pip install (.+)$", stage, flags=re.M)
        for stage in stages
        if " AS " in stage.splitlines()[0]
    }
    assert installs["gateway"] == ["."], installs
    assert installs["worker"][-1] == '".[worker]"', installs


# Run first in a fresh interpreter: from here on, importing any of the worker extra's packages
# (or a submodule of one) fails as it would where only `pip install .` ran.
BLOCK = """
import importlib.abc, sys

BLOCKED = set(sys.argv[1].split(","))

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r} (the gateway's install has none)")
        return None

sys.meta_path.insert(0, NotInstalled())
"""

SERVE = """
import json
from pathlib import Path

from fastapi.testclient import TestClient

from service.main import create_app
from tasks.settings import Settings

settings = Settings(redis_url=sys.argv[2], data_dir=Path(sys.argv[3]))
seen = {}
with TestClient(create_app(settings)) as client:
    for path in ("/healthz", "/openapi.json", "/v1/measures", "/v1/queue", "/v1/jobs/" + "0" * 32):
        seen["GET " + path] = client.get(path).status_code
    bad = client.post("/v1/jobs", json={"model": "not-an-id", "measures": []})
    seen["POST /v1/jobs"] = bad.status_code
    seen["problem"] = bad.headers["content-type"]
    seen["paths"] = "/v1/jobs" in client.get("/openapi.json").json()["paths"]
seen["loaded"] = sorted({m.partition(".")[0] for m in sys.modules} & BLOCKED)
print(json.dumps(seen))
"""


def test_gateway_serves_without_torch(redis_server: PrivateRedis, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/{databases.API}"
    redis.Redis.from_url(url).flushdb()
    blocked = sorted((WORKER - BASE) | TORCH)
    out = subprocess.run(
        [sys.executable, "-c", BLOCK + SERVE, ",".join(blocked), url, str(tmp_path / "var")],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("SHARPNESS_")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen == {
        "GET /healthz": 200,
        "GET /openapi.json": 200,
        "GET /v1/measures": 200,
        "GET /v1/queue": 200,
        "GET /v1/jobs/" + "0" * 32: 404,
        "POST /v1/jobs": 422,
        "problem": "application/problem+json",
        "paths": True,
        "loaded": [],
    }, out.stderr

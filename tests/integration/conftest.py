"""A real service for integration tests: worker and gateway as separate processes.

Redis is the session's private redis-server (tests/conftest.py); each stack uses its own Redis
database, so a fault test's worker never takes another stack's jobs. The worker is
`python -m tasks.worker` and the gateway a real uvicorn process on a free port; tests talk to
it over HTTP only (and read Redis to check what the service cannot be asked about).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tasks.store.local_redis import PrivateRedis, free_port
from tests import databases
from tests.processes import wait_answering

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Stack:
    """One gateway, one worker (replaceable), their data directory and environment."""

    redis_url: str
    data_dir: Path
    env: dict[str, str]
    port: int
    procs: list[subprocess.Popen] = field(default_factory=list)
    worker: subprocess.Popen | None = None
    gateway: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        with open(self.data_dir / log, "ab") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=out, stderr=out)
        self.procs.append(proc)
        return proc

    def start_worker(self) -> subprocess.Popen:
        self.worker = self._spawn([sys.executable, "-m", "tasks.worker"], "worker.log")
        return self.worker

    def start_gateway(self) -> None:
        args = [sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(self.port)]
        self.gateway = self._spawn([*args, "--host", "127.0.0.1"], "gateway.log")

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.data_dir.glob("*.log"))
        )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        wait_answering(self.url, [self.worker, self.gateway], self.logs, "/readyz", timeout_s)

    # ------------------------------------------------------------------ HTTP helpers
    def upload(self, kind: str, path: Path, **fields: str) -> httpx.Response:
        with path.open("rb") as fh:
            files = {"file": (path.name, fh, "application/octet-stream")}
            return httpx.post(f"{self.url}/v1/{kind}", files=files, data=fields, timeout=60)

    def upload_id(self, kind: str, path: Path, **fields: str) -> str:
        resp = self.upload(kind, path, **fields)
        assert resp.status_code in (200, 201), resp.text
        return resp.json()["id"]

    def submit(self, spec: dict[str, Any]) -> str:
        resp = httpx.post(f"{self.url}/v1/jobs", json=spec, timeout=30)
        assert resp.status_code == 202, resp.text
        assert resp.headers["location"].endswith(resp.json()["id"])
        return resp.json()["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        resp = httpx.get(f"{self.url}/v1/jobs/{job_id}", timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait(self, job_id: str, until=TERMINAL, timeout_s: float = 120.0, poll_s: float = 0.1):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in until:
                return job
            time.sleep(poll_s)
        raise TimeoutError(f"job {job_id} still {job['status']}\n{self.logs()}")

    def cancel_when_moving(self, path: str, run_id: str, moving: Callable[[dict], bool]) -> float:
        """Wait (60 s at most) until the run at /v1/{path}/{run_id} is running and `moving`
        sees progress, then cancel it (200 or 202); returns when the cancel was asked."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            run = httpx.get(f"{self.url}/v1/{path}/{run_id}", timeout=30).json()
            if run["status"] == "running" and moving(run):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"{path} {run_id} never made progress: {run}")
        asked = time.monotonic()
        r = httpx.post(f"{self.url}/v1/{path}/{run_id}/cancel", timeout=10)
        assert r.status_code in (200, 202), r.text
        return asked

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start_stack(server: PrivateRedis, db: int, data_dir: Path, **settings: Any) -> Stack:
    url = f"redis://127.0.0.1:{server.port}/{db}"
    data_dir.mkdir(parents=True, exist_ok=True)
    redis.Redis.from_url(url).flushdb()
    env = {
        **os.environ,
        "SHARPNESS_REDIS_URL": url,
        "SHARPNESS_DATA_DIR": str(data_dir),
        "SHARPNESS_HEARTBEAT_S": "1",
        "SHARPNESS_SOFT_TIME_LIMIT_S": "110",
        "SHARPNESS_HARD_TIME_LIMIT_S": "120",
        "SHARPNESS_VISIBILITY_TIMEOUT_S": "130",
        "SHARPNESS_WORKER_QUEUES": "cpu",
        "PYTHONUNBUFFERED": "1",
    }
    env.update({f"SHARPNESS_{k.upper()}": str(v) for k, v in settings.items()})
    stack = Stack(redis_url=url, data_dir=data_dir, env=env, port=free_port())
    try:
        stack.start_gateway()
        stack.start_worker()
        stack.wait_ready()
    except BaseException:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="session")
def stack(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(redis_server, databases.STACK, tmp_path_factory.mktemp("service"))
    yield s
    s.stop()

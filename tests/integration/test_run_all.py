"""`python -m service.run_all` (make run): private Redis, worker and gateway; SIGINT stops all,
and a job running at that moment goes back to the queue and finishes after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tasks.store.local_redis import free_port
from tests import artifacts as A
from tests.integration.conftest import ROOT, Stack
from tests.processes import wait_answering

pytestmark = pytest.mark.integration


def start(data_dir: Path, port: int) -> subprocess.Popen:
    """As `make run` starts it: the data directory given relative to the working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARPNESS_")}
    env.update(
        SHARPNESS_DATA_DIR=data_dir.name,
        PYTHONPATH=str(ROOT),
        SHARPNESS_PORT=str(port),
        SHARPNESS_HEARTBEAT_S="1",
        SHARPNESS_WORKER_QUEUES="cpu",
        PYTHONUNBUFFERED="1",
    )
    log = open(data_dir / "run_all.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "service.run_all"],
        cwd=data_dir.parent,
        env=env,
        stdout=log,
        stderr=log,
    )


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    wait_answering(url, [proc], log.read_text, "/readyz")


def launch(tmp_path: Path) -> tuple[Path, int, subprocess.Popen, Path]:
    """`start` on a free port with tmp_path/var as the data directory: the directory, the
    port, the process and its log."""
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    port = free_port()
    return data_dir, port, start(data_dir, port), data_dir / "run_all.log"


def submit_running_trace(api: Stack, tmp_path: Path) -> str:
    """Upload an MLP and its data and submit a 300-product trace, long enough to be running
    when the stack is stopped; returns the job's id once a worker runs it."""
    x, y = A.data(n=256, in_features=32, classes=10, seed=8)
    model_id = api.upload_id("models", A.export(A.mlp(32, 64, 10, seed=8), tmp_path / "m.pt2", 32))
    data_id = api.upload_id("datasets", A.save_npz(tmp_path / "d.npz", x, y))
    job_id = api.submit(
        {
            "model": model_id,
            "dataset": {"id": data_id, "batch_size": 128},
            "measures": [{"name": "trace", "params": {"num_hvps": 300}}],
        }
    )
    api.wait(job_id, until={"running"}, poll_s=0.02)
    return job_id


def test_run_all_stops_cleanly_and_requeues_running_job(tmp_path: Path) -> None:
    data_dir, port, proc, log = launch(tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        api = Stack(redis_url="", data_dir=data_dir, env={}, port=port)
        job_id = submit_running_trace(api, tmp_path)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(timeout=60) == 0, log.read_text()
        text = log.read_text()
        assert text.index("stopping worker") < text.index("stopping gateway")
        assert text.index("stopping gateway") < text.index("stopping redis")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=2)

        # the same data directory again: the AOF kept the job, which was handed back and runs
        proc = start(data_dir, port)
        wait_ready(url, proc, log)
        job = api.wait(job_id, timeout_s=120)
        assert job["status"] == "succeeded", (job.get("error"), job.get("attempt_history"))
        assert job["attempts"] == 2
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)

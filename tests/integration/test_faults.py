"""A worker killed with SIGKILL mid-job: Redis redelivers the job to a live worker after the
visibility timeout, and it finishes exactly once."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.redis_server import PrivateRedis
from tests import artifacts as A
from tests.integration.conftest import Stack, start_stack

pytestmark = pytest.mark.integration

VISIBILITY_S = 30  # > hard limit, so a healthy job is never redelivered while it runs


@pytest.fixture
def fault_stack(redis_server: PrivateRedis, tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(
        redis_server,
        2,
        tmp_path / "service",
        soft_time_limit_s=25,  # the job takes a few seconds; margin for a loaded 2-core machine
        hard_time_limit_s=28,
        visibility_timeout_s=VISIBILITY_S,
    )
    yield s
    s.stop()


def test_sigkilled_worker_job_runs_again_and_finishes_once(
    fault_stack: Stack, tmp_path: Path
) -> None:
    s = fault_stack
    x, y = A.data(n=64, seed=7)
    model_id = s.upload_id("models", A.export(A.mlp(seed=7), tmp_path / "m.pt2", 4))
    data_id = s.upload_id("datasets", A.save_npz(tmp_path / "d.npz", x, y))
    job_id = s.submit(  # about 3 s of Hutchinson probes, reporting as it goes
        {
            "model": model_id,
            "dataset": {"id": data_id, "batch_size": 32},
            "measures": [{"name": "trace", "params": {"method": "hutchinson", "num_hvps": 400}}],
        }
    )
    first = s.wait(job_id, until={"running"}, poll_s=0.02)
    assert first["status"] == "running", first
    s.worker.send_signal(signal.SIGKILL)
    s.worker.wait()
    killed_at = time.monotonic()
    assert s.job(job_id)["status"] == "running"  # nobody finished it

    s.start_worker()
    job = s.wait(job_id, timeout_s=VISIBILITY_S + 90)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2 and job["worker"] != first["worker"]
    assert time.monotonic() - killed_at < VISIBILITY_S + 60
    assert job["results"]["trace"]["hvps"] >= 400

    # nothing left in the broker that could run it a third time
    r = s.redis()
    deadline = time.monotonic() + 10
    while r.hlen("unacked") or r.llen("cpu"):
        assert time.monotonic() < deadline, (r.hgetall("unacked"), r.lrange("cpu", 0, -1))
        time.sleep(0.1)
    time.sleep(1)
    again = s.job(job_id)
    assert again["attempts"] == 2 and again["finished_at"] == job["finished_at"]

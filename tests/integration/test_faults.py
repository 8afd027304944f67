"""Workers killed with SIGKILL mid-job, against a real Redis, gateway and workers.

The dead worker's heartbeats stop; within a few heartbeats its job is requeued (its message
put back at the head of the queue) by whichever notices first, a live worker's sweep or the
gateway on /v1/queue, /readyz or cancel, and the job finishes once. Settings are the defaults
except the heartbeat (1 s here, 5 s by default: reaping then takes about 25 s instead of 5)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tasks.redis_server import PrivateRedis
from tests import artifacts as A
from tests.integration.conftest import Stack, start_stack

pytestmark = pytest.mark.integration


@pytest.fixture
def fault_stack(redis_server: PrivateRedis, tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(
        redis_server,
        2,
        tmp_path / "service",
        soft_time_limit_s=3_300,  # the defaults: only the heartbeats reap a dead worker's job
        hard_time_limit_s=3_600,
        visibility_timeout_s=4_200,
    )
    yield s
    s.stop()


def _submit(s: Stack, tmp_path: Path, num_hvps: int = 200) -> str:
    x, y = A.data(n=64, seed=7)
    model_id = s.upload_id("models", A.export(A.mlp(seed=7), tmp_path / "m.pt2", 4))
    data_id = s.upload_id("datasets", A.save_npz(tmp_path / "d.npz", x, y))
    return s.submit(  # a few seconds of Hutchinson probes, reporting as it goes
        {
            "model": model_id,
            "dataset": {"id": data_id, "batch_size": 32},
            "measures": [
                {"name": "trace", "params": {"method": "hutchinson", "num_hvps": num_hvps}}
            ],
        }
    )


def _kill(proc: subprocess.Popen) -> float:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return time.monotonic()


def _broker_empty(s: Stack) -> None:
    """Nothing left in the broker that could run the job a third time."""
    r = s.redis()
    deadline = time.monotonic() + 10
    while r.hlen("unacked") or r.llen("cpu"):
        assert time.monotonic() < deadline, (r.hgetall("unacked"), r.lrange("cpu", 0, -1))
        time.sleep(0.1)


def _start_named(s: Stack, name: str) -> subprocess.Popen:
    env = s.env
    s.env = {**env, "SHARPNESS_WORKER_NAME": name}
    try:
        return s.start_worker()
    finally:
        s.env = env


def test_gateway_requeues_a_dead_workers_job_and_it_finishes_once(
    fault_stack: Stack, tmp_path: Path
) -> None:
    s = fault_stack
    job_id = _submit(s, tmp_path)
    first = s.wait(job_id, until={"running"}, poll_s=0.02)
    assert first["status"] == "running", first
    killed_at = _kill(s.worker)
    assert s.job(job_id)["status"] == "running"  # nobody noticed yet

    # no worker is left: the gateway's sweep on /v1/queue requeues it
    deadline = killed_at + 60
    while (job := s.job(job_id))["status"] == "running":
        assert time.monotonic() < deadline, job
        queue = httpx.get(f"{s.url}/v1/queue", timeout=10).json()
        time.sleep(0.5)
    assert job["status"] == "queued" and job["worker"] is None and job["started_at"] is None
    assert all(p["state"] == "pending" and p["iteration"] == 0 for p in job["progress"].values())
    [lost] = job["attempt_history"]
    assert (lost["attempt"], lost["worker"], lost["outcome"]) == (1, first["worker"], "worker-lost")
    queue = httpx.get(f"{s.url}/v1/queue", timeout=10).json()
    assert job_id not in [r["id"] for r in queue["running"]]
    assert s.redis().llen("cpu") == 1 and s.redis().hlen("unacked") == 0  # its message is back

    requeued_after = time.monotonic() - killed_at
    assert requeued_after < 60, requeued_after  # about 3 heartbeats (10 s at least) + a sweep

    s.start_worker()
    done = s.wait(job_id, timeout_s=240)  # the rerun's compute: slow on a loaded 2-core box
    assert done["status"] == "succeeded", done["error"]
    assert done["results"]["trace"]["hvps"] >= 200
    assert done["attempts"] == 2 and done["worker"] != first["worker"]
    assert [(a["attempt"], a["outcome"]) for a in done["attempt_history"]] == [
        (1, "worker-lost"),
        (2, "succeeded"),
    ]
    assert done["attempt_history"][1]["worker"] == done["worker"]
    _broker_empty(s)
    time.sleep(1)
    again = s.job(job_id)
    assert again["attempts"] == 2 and again["finished_at"] == done["finished_at"]


def test_a_standby_worker_reaps_and_runs_the_job(fault_stack: Stack, tmp_path: Path) -> None:
    """Nobody reads /v1/queue: the live worker's own sweep notices the dead one."""
    s = fault_stack
    first_worker = s.worker
    standby = _start_named(s, "standby@test")
    deadline = time.monotonic() + 120
    while "standby@test" not in [
        w["hostname"] for w in httpx.get(f"{s.url}/v1/queue", timeout=10).json()["workers"]
    ]:
        assert time.monotonic() < deadline and standby.poll() is None, s.logs()
        time.sleep(0.5)
    job_id = _submit(s, tmp_path)
    first = s.wait(job_id, until={"running"}, poll_s=0.02)
    victim = standby if first["worker"] == "standby@test" else first_worker
    killed_at = _kill(victim)
    if victim is standby:  # the other one must be alive to reap it
        s.start_worker()

    deadline = killed_at + 60  # the survivor's sweep: about 3 heartbeats (10 s at least)
    while (job := s.job(job_id))["attempts"] < 2 and job["status"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    done = s.wait(job_id, timeout_s=240)  # the rerun's compute: slow on a loaded 2-core box
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2 and done["worker"] != first["worker"]
    assert [(a["worker"], a["outcome"]) for a in done["attempt_history"]] == [
        (first["worker"], "worker-lost"),
        (done["worker"], "succeeded"),
    ]
    _broker_empty(s)


def test_cancel_ends_a_dead_workers_job(fault_stack: Stack, tmp_path: Path) -> None:
    s = fault_stack
    job_id = _submit(s, tmp_path)
    first = s.wait(job_id, until={"running"}, poll_s=0.02)
    killed_at = _kill(s.worker)
    time.sleep(max(0.0, killed_at + 11 - time.monotonic()))  # its heartbeat key expires (10 s)
    resp = httpx.post(f"{s.url}/v1/jobs/{job_id}/cancel", timeout=10)
    assert resp.status_code == 200, resp.text
    job = resp.json()
    assert job["status"] == "cancelled" and job["finished_at"] is not None
    assert [(a["worker"], a["outcome"]) for a in job["attempt_history"]] == [
        (first["worker"], "worker-lost")
    ]

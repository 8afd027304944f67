"""Faults against a real Redis, gateway and workers: workers killed with SIGKILL or paused
with SIGSTOP mid-job, cancel storms, racing idempotent retries, a Redis restart mid-job.

The dead worker's heartbeats stop; within a few heartbeats its job is requeued (its message
put back at the head of the queue) by whichever notices first, a live worker's sweep or the
gateway on /v1/queue, /readyz or cancel, and the job finishes once. Settings are the defaults
except the heartbeat (1 s here, 5 s by default: reaping then takes about 25 s instead of 5)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tasks.store.local_redis import PrivateRedis
from tests import artifacts as A
from tests import databases
from tests.integration.conftest import Stack, start_stack

pytestmark = pytest.mark.integration


@pytest.fixture
def fault_stack(redis_server: PrivateRedis, tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(
        redis_server,
        databases.FAULTS_REAP,
        tmp_path / "service",
        soft_time_limit_s=3_300,  # the defaults: only the heartbeats reap a dead worker's job
        hard_time_limit_s=3_600,
        visibility_timeout_s=4_200,
    )
    yield s
    s.stop()


def _submit(s: Stack, tmp_path: Path, num_hvps: int = 2_000, n: int = 64) -> str:
    x, y = A.data(n=n, seed=7)
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


def _wait_listed(s: Stack, name: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while name not in [
        w["hostname"] for w in httpx.get(f"{s.url}/v1/queue", timeout=10).json()["workers"]
    ]:
        assert time.monotonic() < deadline and proc.poll() is None, s.logs()
        time.sleep(0.5)


def _running_beside_a_standby(s: Stack, tmp_path: Path, num_hvps: int = 2_000):
    """A second worker, "standby@test", beside the stack's; a job running on one of them.
    Returns (job id, the job as it started, the worker running it, the standby)."""
    first_worker = s.worker
    standby = _start_named(s, "standby@test")
    _wait_listed(s, "standby@test", standby)
    job_id = _submit(s, tmp_path, num_hvps=num_hvps)
    first = s.wait(job_id, until={"running"}, poll_s=0.02)
    victim = standby if first["worker"] == "standby@test" else first_worker
    return job_id, first, victim, standby


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
    assert done["results"]["trace"]["hvps"] >= 2_000
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
    job_id, first, victim, standby = _running_beside_a_standby(s, tmp_path)
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


def test_with_default_heartbeats_a_killed_workers_job_is_done_within_two_minutes(
    redis_server: PrivateRedis, tmp_path: Path
) -> None:
    """The issue's bound with every setting at its default (5 s heartbeats): SIGKILL the
    worker running a job; the standby finishes it within 2 minutes of the kill, once."""
    s = start_stack(redis_server, databases.FAULTS, tmp_path / "service", heartbeat_s=5)
    try:
        job_id, first, victim, _ = _running_beside_a_standby(s, tmp_path)
        killed_at = _kill(victim)
        done = s.wait(job_id, timeout_s=120)
        finished_after = time.monotonic() - killed_at
        assert done["status"] == "succeeded", done["error"]
        assert finished_after < 120, finished_after
        assert [(a["worker"], a["outcome"]) for a in done["attempt_history"]] == [
            (first["worker"], "worker-lost"),
            (done["worker"], "succeeded"),
        ]
        _broker_empty(s)
    finally:
        s.stop()


# ------------------------------------------------------------------ pauses, storms, races
def _pids(proc: subprocess.Popen) -> list[int]:
    """A worker's main process and its pool child (what a stopped machine stops)."""
    import psutil

    main = psutil.Process(proc.pid)
    return [main.pid, *(c.pid for c in main.children(recursive=True))]


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def test_a_paused_worker_is_replaced_and_wakes_without_writing(
    fault_stack: Stack, tmp_path: Path
) -> None:
    """SIGSTOP past the heartbeat: the survivor reaps and reruns the job; SIGCONT: the woken
    run finds the record another's and writes nothing; the job ends once."""
    s = fault_stack
    job_id, first, victim, _ = _running_beside_a_standby(s, tmp_path, num_hvps=3_000)
    paused = _pids(victim)
    _signal_all(paused, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 120  # heartbeat expiry, a sweep, then the rerun starts
        while (job := s.job(job_id))["attempts"] < 2:
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
    finally:
        _signal_all(paused, signal.SIGCONT)
    done = s.wait(job_id, timeout_s=240)
    assert done["status"] == "succeeded", done["error"]
    assert done["worker"] != first["worker"] and done["attempts"] == 2
    assert [(a["worker"], a["outcome"]) for a in done["attempt_history"]] == [
        (first["worker"], "worker-lost"),
        (done["worker"], "succeeded"),
    ]
    time.sleep(5)  # the woken worker has run a few heartbeats by now
    again = s.job(job_id)
    assert again == done, "the woken run wrote to the record"
    assert victim.poll() is None  # it lives on and takes new work
    _broker_empty(s)


def test_a_cancel_storm_ends_a_running_job_once(fault_stack: Stack, tmp_path: Path) -> None:
    s = fault_stack
    job_id = _submit(s, tmp_path, num_hvps=100_000)
    s.wait(job_id, until={"running"}, poll_s=0.02)
    answers: list[int] = []

    def cancel() -> None:
        with httpx.Client(timeout=60) as client:
            for _ in range(5):
                answers.append(client.post(f"{s.url}/v1/jobs/{job_id}/cancel").status_code)

    storm = [threading.Thread(target=cancel) for _ in range(10)]
    for t in storm:
        t.start()
    for t in storm:
        t.join()
    assert set(answers) <= {200, 202}, answers
    done = s.wait(job_id, timeout_s=60)
    assert done["status"] == "cancelled" and done["attempts"] == 1
    assert [a["outcome"] for a in done["attempt_history"]] == ["cancelled"]
    after = httpx.post(f"{s.url}/v1/jobs/{job_id}/cancel", timeout=30)
    assert after.status_code == 200 and after.json()["finished_at"] == done["finished_at"]
    time.sleep(2)
    assert s.job(job_id) == done
    _broker_empty(s)


def test_racing_idempotent_retries_make_one_job(fault_stack: Stack, tmp_path: Path) -> None:
    s = fault_stack
    x, y = A.data(n=64, seed=7)
    model_id = s.upload_id("models", A.export(A.mlp(seed=7), tmp_path / "m.pt2", 4))
    data_id = s.upload_id("datasets", A.save_npz(tmp_path / "d.npz", x, y))
    label = uuid.uuid4().hex[:12]
    spec = {
        "model": model_id,
        "dataset": {"id": data_id, "batch_size": 32},
        "measures": [{"name": "trace", "params": {"num_hvps": 50}}],
        "labels": {"race": label},
    }
    headers = {"Idempotency-Key": f"race-{label}"}
    barrier = threading.Barrier(16)
    answers: list[httpx.Response] = []

    def submit() -> None:
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            answers.append(client.post(f"{s.url}/v1/jobs", json=spec, headers=headers))

    racers = [threading.Thread(target=submit) for _ in range(16)]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    assert {r.status_code for r in answers} <= {200, 202}, [r.text for r in answers]
    ids = {r.json()["id"] for r in answers}
    assert len(ids) == 1, ids
    [job_id] = ids
    done = s.wait(job_id, timeout_s=120)
    assert done["status"] == "succeeded" and done["attempts"] == 1
    listed = httpx.get(f"{s.url}/v1/jobs", params={"label": f"race:{label}"}, timeout=30)
    assert [j["id"] for j in listed.json()["items"]] == [job_id], listed.text
    _broker_empty(s)  # one message was sent, and it was consumed


# ------------------------------------------------------------------ a Redis restart
@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of this test's own (AOF on), which the test restarts."""
    server = PrivateRedis(tmp_path / "redis", aof=True).start()
    yield server
    server.stop()


def test_a_redis_restart_mid_job_costs_nothing(own_redis: PrivateRedis, tmp_path: Path) -> None:
    """Redis stops for a few seconds while a job computes: the stores' retries wait it out,
    the job goes on in the same attempt and succeeds once, with its results."""
    limits = {"soft_time_limit_s": 1_200, "hard_time_limit_s": 1_260, "visibility_timeout_s": 1_400}
    s = start_stack(own_redis, 0, tmp_path / "service", **limits)
    try:
        # the run computes through the outage: sized to still be running well after it
        num_hvps = max(6_000, int(_hvps_per_second(s, tmp_path) * 30))
        job_id = _submit(s, tmp_path, num_hvps=num_hvps)
        s.wait(job_id, until={"running"}, poll_s=0.02)
        deadline = time.monotonic() + 60
        while s.job(job_id)["progress"]["trace"]["iteration"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        own_redis.stop()  # SIGTERM: Redis writes its AOF and exits
        time.sleep(4)
        own_redis.start()
        during = s.job(job_id)
        assert during["status"] == "running", during  # the outage fell inside the run
        done = s.wait(job_id, timeout_s=240)
        assert done["status"] == "succeeded", (done["error"], s.logs())
        assert done["results"]["trace"]["hvps"] >= num_hvps
        assert done["attempts"] == 1, (done["attempt_history"], s.logs())
        assert [a["outcome"] for a in done["attempt_history"]] == ["succeeded"]
        time.sleep(3)
        assert s.job(job_id) == done
        assert s.worker.poll() is None and s.gateway.poll() is None
    finally:
        s.stop()


# ------------------------------------------------------------------ fenced writes
def _child_pids(proc: subprocess.Popen) -> list[int]:
    """The worker's pool children (the processes that compute), not its main process."""
    import psutil

    return [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]


def test_a_stale_run_woken_after_a_requeue_writes_nothing(
    fault_stack: Stack, tmp_path: Path
) -> None:
    """The defect: a run paused past its lease, its job requeued by the reaper, then woken,
    wrote its end into the queued record. Here the worker's processes are stopped, the
    gateway's sweep requeues the job, and only the computing child is woken (its main process
    stays stopped, so nothing can start the job again meanwhile): the woken run notices it was
    taken over and writes nothing at all, not its end, not its progress; the record is what
    the requeue left, field for field. Then the main process wakes and runs attempt 2."""
    s = fault_stack
    job_id = _submit(s, tmp_path, num_hvps=3_000)
    first = s.wait(job_id, until={"running"}, poll_s=0.02)
    deadline = time.monotonic() + 60
    while s.job(job_id)["progress"]["trace"]["iteration"] == 0:  # computing, writing progress
        assert time.monotonic() < deadline, s.logs()
        time.sleep(0.05)
    main, children = s.worker.pid, _child_pids(s.worker)
    assert children, "no pool child"
    log = s.data_dir / "worker.log"
    logged_before = log.read_text(errors="replace").count("taken over")
    _signal_all([main, *children], signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 120  # lock and heartbeat expire, the gateway sweeps
        while (job := s.job(job_id))["status"] != "queued":
            assert job["status"] == "running" and time.monotonic() < deadline, job
            httpx.get(f"{s.url}/v1/queue", timeout=10)
            time.sleep(0.5)
        assert [(a["attempt"], a["outcome"]) for a in job["attempt_history"]] == [
            (1, "worker-lost")
        ]
        assert all(p["iteration"] == 0 for p in job["progress"].values())
        key = f"sharpness:job:{job_id}"
        requeued = s.redis().hgetall(key)

        _signal_all(children, signal.SIGCONT)  # the stale run wakes; its main still sleeps
        deadline = time.monotonic() + 60
        while log.read_text(errors="replace").count("taken over") <= logged_before:
            assert time.monotonic() < deadline, s.logs()
            time.sleep(0.1)
        time.sleep(2)  # two heartbeats of its lock keeper: it stays silent
        assert s.redis().hgetall(key) == requeued, "the stale run wrote to the record"
    finally:
        _signal_all([main, *children], signal.SIGCONT)

    done = s.wait(job_id, timeout_s=240)  # the woken worker takes the requeued message
    assert done["status"] == "succeeded", (done["error"], s.logs())
    assert done["attempts"] == 2 and done["results"]["trace"]["hvps"] >= 3_000
    history = done["attempt_history"]
    assert [(a["attempt"], a["worker"], a["outcome"]) for a in history] == [
        (1, first["worker"], "worker-lost"),
        (2, done["worker"], "succeeded"),
    ]
    times = [t for a in history for t in (a["started_at"], a["ended_at"])]
    assert times == sorted(times), history  # one attempt after the other
    _broker_empty(s)


# ------------------------------------------------------------------ a long Redis outage
def _hvps_per_second(s: Stack, tmp_path: Path, n: int = 64) -> float:
    """How fast this machine computes the fault jobs' HVPs (over `n` samples) now (a short
    job, timed)."""
    done = s.wait(_submit(s, tmp_path, num_hvps=1_000, n=n), timeout_s=240)
    assert done["status"] == "succeeded", done["error"]
    trace = done["results"]["trace"]
    return trace["hvps"] / max(trace["seconds"], 1e-3)


def _outage_mid_job(own_redis: PrivateRedis, tmp_path: Path, outage_s: float) -> None:
    """Redis stops for `outage_s` (far past the stores' 30 s of retries) while a job computes:
    the run goes on computing, keeps its progress, and writes it and its end when Redis is
    back; the job succeeds in attempt 1 with nothing computed twice; the gateway answers 503
    meanwhile, at once."""
    limits = {"soft_time_limit_s": 1_200, "hard_time_limit_s": 1_260, "visibility_timeout_s": 1_400}
    s = start_stack(own_redis, 0, tmp_path / "service", **limits)
    try:
        # still computing when Redis is back, within the measure's 100,000 products: more
        # samples per product when this machine is fast
        n = 64 * math.ceil(_hvps_per_second(s, tmp_path) * (outage_s + 40) / 50_000)
        num_hvps = int(_hvps_per_second(s, tmp_path, n) * (outage_s + 40))
        job_id = _submit(s, tmp_path, num_hvps=num_hvps, n=n)
        s.wait(job_id, until={"running"}, poll_s=0.02)
        deadline = time.monotonic() + 60
        while (before := s.job(job_id))["progress"]["trace"]["iteration"] == 0:
            assert time.monotonic() < deadline, s.logs()
            time.sleep(0.05)
        own_redis.stop()  # SIGTERM: Redis writes its AOF and exits
        stopped_at = time.monotonic()
        try:
            t0 = time.monotonic()
            resp = httpx.get(f"{s.url}/v1/jobs/{job_id}", timeout=30)
            assert resp.status_code == 503 and time.monotonic() - t0 < 10, resp.text
            while time.monotonic() - stopped_at < outage_s:  # the outage lasts this long
                assert s.worker.poll() is None and s.gateway.poll() is None, s.logs()
                time.sleep(1)
        finally:
            own_redis.start()
        # the run computed all along: its progress, written when Redis is back, moved on
        expected = before["progress"]["trace"]["iteration"] + 1
        deadline = time.monotonic() + 60
        while (job := s.job(job_id))["status"] == "running":
            if job["progress"]["trace"]["iteration"] > expected:
                break
            assert time.monotonic() < deadline, (job, s.logs())
            time.sleep(0.2)
        done = s.wait(job_id, timeout_s=outage_s + 600)
        assert done["status"] == "succeeded", (done["error"], s.logs())
        assert done["attempts"] == 1, (done["attempt_history"], s.logs())
        assert [(a["attempt"], a["outcome"]) for a in done["attempt_history"]] == [(1, "succeeded")]
        trace = done["results"]["trace"]
        assert trace["hvps"] >= num_hvps  # its one attempt computed all of it
        assert done["progress"]["trace"]["state"] == "done"
        log = (s.data_dir / "worker.log").read_text(errors="replace")
        assert "goes back to the queue" not in log and "job-failed" not in log
        time.sleep(3)
        assert s.job(job_id) == done
        assert s.worker.poll() is None and s.gateway.poll() is None
    finally:
        s.stop()


@pytest.mark.skipif(
    not os.environ.get("SHARPNESS_LONG_FAULTS"),
    reason="a 60 s outage (about 90 s of test): set SHARPNESS_LONG_FAULTS=1 to run it",
)
def test_a_60_s_redis_outage_mid_job_costs_nothing(own_redis: PrivateRedis, tmp_path: Path):
    _outage_mid_job(own_redis, tmp_path, 60)


@pytest.mark.skipif(
    not os.environ.get("SHARPNESS_LONG_FAULTS"),
    reason="a 120 s outage: set SHARPNESS_LONG_FAULTS=1 to run it",
)
def test_a_120_s_redis_outage_mid_job_costs_nothing(own_redis: PrivateRedis, tmp_path: Path):
    _outage_mid_job(own_redis, tmp_path, 120)

"""Service processes for tests: a real `python -m tasks.worker`, or the gateway as `make
gateway` starts it, started with its environment and its output in a log file, and stopped
the way a supervisor stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from service.run_all import gateway_command
from tasks.store.local_redis import free_port

ROOT = Path(__file__).resolve().parents[1]


def worker_env(redis_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a CPU worker on `redis_url` beating every second; `settings` are
    more SHARPNESS_ variables (or overrides)."""
    return {
        **os.environ,
        "SHARPNESS_REDIS_URL": redis_url,
        "SHARPNESS_DATA_DIR": str(data_dir),
        "SHARPNESS_HEARTBEAT_S": "1",
        "SHARPNESS_WORKER_QUEUES": "cpu",
        "PYTHONUNBUFFERED": "1",
        **settings,
    }


def spawn_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start `python -m tasks.worker`; its output goes to `log` (appended)."""
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "tasks.worker"], cwd=ROOT, env=env, stdout=out, stderr=out
        )


def stop(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM (a warm shutdown), then SIGKILL if it has not exited within `timeout_s`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def spawn_gateway(
    env: dict[str, str], processes: int, log: Path, port: int | None = None
) -> tuple[subprocess.Popen, str]:
    """Start the gateway with `processes` processes on a free port (or `port`), in a session
    of its own (stop it with `os.killpg`); returns it and its URL. Output goes to `log`."""
    port = port or free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            gateway_command("127.0.0.1", str(port), processes),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    return proc, f"http://127.0.0.1:{port}"


def wait_answering(
    url: str,
    procs: list[subprocess.Popen],
    describe: Callable[[], str],
    path: str = "/healthz",
    timeout_s: float = 120,
) -> None:
    """Until GET `url``path` answers 200; fails with `describe()` (the logs) if one of
    `procs` exits first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a service process exited early\n{describe()}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url}{path} did not answer 200\n{describe()}")


def stop_group(*procs: subprocess.Popen, timeout_s: float = 40) -> None:
    """SIGTERM to each running process' group (a gateway and the processes it started, as
    `spawn_gateway` makes them), then SIGKILL to any group still there after `timeout_s`."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in running:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

"""Service processes for tests: a real `python -m tasks.worker` started with its environment
and its output in a log file, and stopped the way a supervisor stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

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

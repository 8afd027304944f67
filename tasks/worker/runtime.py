"""What one worker process knows about itself: name, device, stores, and the job it runs.

The Celery task and the heartbeat thread share this object: the task records the job it is
running, the heartbeat thread refreshes that job's lock and enforces the hard time limit, and
the shutdown signal handler sets `draining` so a running job is handed back to the queue.
"""

from __future__ import annotations

import platform
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from tasks.blobstore import BlobStore
from tasks.jobstore import JobStore
from tasks.settings import Settings, get_settings


def unique_hostname(prefix: str = "sharpness") -> str:
    """Celery needs a distinct node name per worker process, also on one machine."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"


def lock_ttl(settings: Settings) -> int:
    """A few heartbeats: a dead worker's lock expires long before Redis redelivers its job."""
    return max(3 * settings.heartbeat_s, 3)


@dataclass
class ActiveJob:
    job_id: str
    started: float = field(default_factory=time.monotonic)
    store: Any = None  # the store holding the record when it is not a job (a trajectory)
    attempt: int | None = None  # the record's attempt number, once the run started
    lost: bool = False  # another worker holds the lock now: stop and write nothing


@dataclass
class WorkerRuntime:
    hostname: str
    settings: Settings
    store: JobStore
    blobs: BlobStore
    device: str = "cpu"
    draining: threading.Event = field(default_factory=threading.Event)
    active: ActiveJob | None = None

    @classmethod
    def create(cls, hostname: str | None = None, settings: Settings | None = None):
        s = settings or get_settings()
        return cls(
            hostname=hostname or unique_hostname(),
            settings=s,
            store=JobStore.from_url(s.redis_url),
            blobs=BlobStore(s.blob_dir),
        )

    def refresh_lock(self, job_id: str) -> bool:
        """Extend our lock on `job_id`; False if it is no longer ours."""
        return self.store.refresh_lock(job_id, self.hostname, lock_ttl(self.settings))


def versions() -> dict[str, str]:
    """Library versions recorded with every job, so a result can be reproduced."""
    out = {"python": platform.python_version()}
    for dist, key in (
        ("torch", "torch"),
        ("numpy", "numpy"),
        ("celery", "celery"),
        ("sharpness-service", "service"),
    ):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = "unknown"
    return out


_current: WorkerRuntime | None = None


def current(hostname: str | None = None) -> WorkerRuntime:
    """The process-wide runtime (made on first use when the worker did not install one)."""
    global _current
    if _current is None:
        _current = WorkerRuntime.create(hostname)
    return _current


def install(runtime: WorkerRuntime) -> None:
    global _current
    _current = runtime

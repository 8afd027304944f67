"""What one worker process knows about itself: name, device, stores, and whether it drains.

The worker's main process makes it before the pool forks its child, so the child inherits it;
the child opens its own Redis connections (`reconnect`) and runs the tasks. `draining` is an
event both processes share: the main process sets it on a warm shutdown, and the run in the
child hands its record back to the queue at its next iteration.
"""

from __future__ import annotations

import platform
import socket
import threading
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from tasks.settings import Settings, get_settings
from tasks.store.blobs import BlobStore
from tasks.store.records import JobStore


def unique_hostname(prefix: str = "sharpness") -> str:
    """Celery needs a distinct node name per worker process, also on one machine."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"


def lock_ttl(settings: Settings) -> int:
    """A few heartbeats: a dead worker's lock expires long before Redis redelivers its job."""
    return max(3 * settings.heartbeat_s, 3)


@dataclass
class WorkerRuntime:
    hostname: str
    settings: Settings
    store: JobStore
    blobs: BlobStore
    device: str = "cpu"
    # a threading.Event in one process; a multiprocessing one shared with the pool's child
    draining: Any = field(default_factory=threading.Event)

    @classmethod
    def create(cls, hostname: str | None = None, settings: Settings | None = None) -> WorkerRuntime:
        s = settings or get_settings()
        return cls(
            hostname=hostname or unique_hostname(),
            settings=s,
            store=JobStore.from_url(s.redis_url),
            blobs=BlobStore(s.blob_dir),
        )

    def reconnect(self) -> None:
        """Fresh Redis connections (a forked child must not share its parent's sockets)."""
        self.store = JobStore.from_url(self.settings.redis_url)


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

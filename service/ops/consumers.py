"""Who consumes each queue: the workers whose heartbeat is fresh and the queues they read,
for `/readyz` and for the `Warning` a submit answers with when nobody reads its queue."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from fastapi import Response

from service.ops import rows
from tasks.app import QUEUES
from tasks.contract.spec import JobStatus
from tasks.settings import Settings
from tasks.store.records import JobStore, RecordStore

log = logging.getLogger("sharpness.gateway")


def fresh_s(settings: Settings) -> int:
    """A heartbeat counts as live for three heartbeat periods (at least 10 s)."""
    return max(3 * settings.heartbeat_s, 10)


def worker_queues(worker: dict[str, Any]) -> tuple[list[str], bool]:
    """The queues a worker consumes, and whether that is certain (not assumed).

    A heartbeat that carries `queues` (tasks.worker writes them comma-separated; a JSON list
    is read too) is read as is.
    Without it the queues follow from the device: a worker without CUDA can only consume
    `cpu` (tasks.worker refuses `gpu` there), a CUDA worker is assumed to consume its default
    `gpu,cpu` (SHARPNESS_WORKER_QUEUES may have narrowed it; the answer says "assumed")."""
    raw = worker.get("queues")
    if raw:
        try:
            parsed = json.loads(raw) if raw.lstrip().startswith("[") else raw.split(",")
        except ValueError:
            parsed = raw.split(",")
        queues = [str(q).strip() for q in parsed if str(q).strip()]
        if queues:
            return queues, True
    device = str(worker.get("device") or "").lower()
    if "cuda" in device:
        return ["gpu", "cpu"], False
    return ["cpu"], True


@dataclass
class QueueCheck:
    """Who consumes one queue and what waits on it."""

    queue: str
    consumers: list[str] = field(default_factory=list)
    assumed: bool = False  # some consumer's queues were inferred from its device
    queued: int = 0
    oldest_s: float | None = None

    def result(self) -> str:
        if self.consumers:
            n = len(self.consumers)
            note = " (queues assumed from the device)" if self.assumed else ""
            return f"ok: {n} live consumer{'s' * (n != 1)}{note}"
        if not self.queued:
            return "no-consumer: nothing queued"
        oldest = f", oldest {self.oldest_s:.0f} s" if self.oldest_s is not None else ""
        return (
            f"no-consumer: {self.queued} queued run{'s' * (self.queued != 1)} wait{oldest}; "
            f"no live worker consumes '{self.queue}': {FIX[self.queue]}"
        )


# What to do when a queue has no consumer, named in /readyz and in the submit warning.
FIX = {
    "gpu": "start a worker on a CUDA device (SHARPNESS_WORKER_QUEUES unset or including "
    "'gpu'), or submit with device 'cpu' or 'auto'",
    "cpu": "start a worker whose SHARPNESS_WORKER_QUEUES includes 'cpu' (the default)",
}


def live_workers(
    store: JobStore, settings: Settings, workers: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The workers (read from `store` unless given) whose last heartbeat is fresh."""
    now = datetime.now(UTC)
    limit = fresh_s(settings)
    return [
        w
        for w in (store.workers() if workers is None else workers)
        if (age := rows.worker_age_s(w, now)) is not None and age <= limit
    ]


def consumers(workers: list[dict[str, Any]]) -> dict[str, QueueCheck]:
    checks = {q: QueueCheck(q) for q in QUEUES}
    for w in workers:
        queues, certain = worker_queues(w)
        for q in queues:
            if q in checks:
                checks[q].consumers.append(w["hostname"])
                checks[q].assumed |= not certain
    return checks


# The header a submit answers with when no live worker consumes the record's queue.
SUBMIT_WARNING = {
    202: {
        "headers": {
            "Warning": {
                "description": "Present when no live worker consumes the queue the record "
                "went to: `199 - \"no live worker consumes queue 'gpu' (device 'cuda') ...\"` "
                "with the fix. The record is made and queued all the same; it runs when "
                "such a worker starts.",
                "schema": {"type": "string"},
            }
        }
    }
}


class ConsumedQueues:
    """Which queues a live worker consumed when the heartbeats were last read, one per gateway
    process: a submit's `Warning` check reads the heartbeats at most once per `ttl_s` while its
    queue is consumed (not once per submit), and on every submit while it is not, so the
    warning goes as soon as a worker beats. A worker that dies is seen within `ttl_s` more than
    its heartbeat's freshness (`fresh_s`), which is seconds either way."""

    def __init__(self, ttl_s: float = 2.0) -> None:
        self.ttl_s = ttl_s
        self._queues: frozenset[str] = frozenset()
        self._read_at = float("-inf")

    def has_consumer(self, store: RecordStore, settings: Settings, queue: str) -> bool:
        now = time.monotonic()
        if queue in self._queues and now - self._read_at < self.ttl_s:
            return True
        checks = consumers(live_workers(JobStore(store.r), settings))
        self._queues = frozenset(q for q, check in checks.items() if check.consumers)
        self._read_at = now
        return queue in self._queues


def warn_if_unconsumed(
    response: Response,
    store: RecordStore,
    settings: Settings,
    record: Any,
    consumed: ConsumedQueues,
) -> None:
    """Set a submit's `Warning` header when the record (a job or a trajectory) is queued and
    no live worker consumes its queue; never fails the submit (the record is made and
    enqueued already)."""
    if record.status != JobStatus.queued or record.queue not in FIX:
        return
    try:
        if consumed.has_consumer(store, settings, record.queue):
            return
    except redis.RedisError:
        return
    text = (
        f"no live worker consumes queue '{record.queue}' (device '{record.spec.device}'); "
        f"it waits in the queue until one starts: {FIX[record.queue]}"
    )
    log.warning("submit %s: %s", record.id, text)
    response.headers["Warning"] = f'199 - "{text}"'

"""One read of Redis that the queue endpoint and the metrics both report from.

Broker side (kombu's Redis transport, default key names): a queue's waiting messages are the
list named after the queue, plus one list per priority step named "<queue>\\x06\\x16<step>"
(steps 3, 6, 9). A message a worker has taken but not acknowledged (acks_late: the whole time
its job runs) moves to the hash "unacked" (delivery tag → JSON [message, exchange,
routing_key]), indexed by the sorted set "unacked_index"; the routing key is the queue name
with our direct-exchange queues, which gives the per-queue reserved count.

Record side: the stores' per-status indexes (tasks.store.records `view`: counts by status, queued
records per queue and the oldest, the running rows), for jobs and trajectories, so a snapshot
costs a constant number of round trips whatever the number of records. Cancelled records
leave the queued index at once, so the queued counts exclude them even while their message
still waits in the broker (a worker drops it when it takes it). Worker heartbeats (from the
workers index, no SCAN) give the workers online.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from tasks import reaper
from tasks.app import QUEUES
from tasks.contract.spec import JobStatus
from tasks.settings import Settings
from tasks.store.records import IndexView, JobRow, JobStore
from tasks.store.trajectories import TrajectoryStore

log = logging.getLogger("sharpness.gateway")

PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)  # step 0 is the bare queue name
UNACKED = "unacked"


def reap(store: JobStore, settings: Settings, celery: Any) -> list[reaper.Reaped]:
    """Requeue (or fail, or cancel) the runs whose worker stopped beating, as the workers'
    own sweep does: the gateway notices first when no worker is left. Never fails a read,
    except when Redis itself is down: the read would fail next anyway, so it answers at once."""
    try:
        return reaper.sweep(store, settings, reaper.celery_sender(celery))
    except redis.ConnectionError:
        raise
    except Exception:
        log.exception("reaper sweep failed")
        return []


class QueuedCount(int):
    """How many records are queued (`len()` works on it, as on the list it replaced)."""

    def __len__(self) -> int:
        return int(self)


@dataclass
class Snapshot:
    waiting: dict[str, int]
    reserved: dict[str, int]
    workers: list[dict[str, Any]]
    views: list[IndexView] = field(default_factory=list)  # one per kind: job, trajectory
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def view(self, kind: str) -> IndexView | None:
        return next((v for v in self.views if v.kind == kind), None)

    def by_status(self, kind: str = "job") -> dict[str, int]:
        view = self.view(kind)
        return dict(view.by_status) if view else {s.value: 0 for s in JobStatus}

    def queued_count(self, queue: str | None = None, kind: str | None = None) -> int:
        """Queued records (jobs and trajectories unless `kind`) on `queue` (all when None)."""
        return sum(
            n
            for v in self.views
            if kind is None or v.kind == kind
            for q, n in v.queued.items()
            if queue is None or q == queue
        )

    def queued(self, queue: str | None = None) -> QueuedCount:
        """The queued count (kept for callers that took `len()` of the former row list)."""
        return QueuedCount(self.queued_count(queue))

    def oldest_queued_age_s(
        self, queue: str | None = None, kind: str | None = None
    ) -> float | None:
        times = [
            t
            for v in self.views
            if kind is None or v.kind == kind
            for q, t in v.oldest_queued.items()
            if t is not None and (queue is None or q == queue)
        ]
        return max(0.0, (self.taken_at - min(times)).total_seconds()) if times else None

    def running(self) -> list[JobRow]:
        rows = [r for v in self.views for r in v.running]
        return sorted(rows, key=lambda r: r.started_at or r.created_at or self.taken_at)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def broker_depths(r: redis.Redis) -> tuple[dict[str, int], dict[str, int]]:
    """(waiting, reserved) per queue, read the way kombu's Redis transport stores them."""
    pipe = r.pipeline(transaction=False)
    for q in QUEUES:
        pipe.llen(q)
        for step in PRIORITY_STEPS:
            pipe.llen(f"{q}{PRIORITY_SEP}{step}")
    sizes = pipe.execute()
    per = 1 + len(PRIORITY_STEPS)
    waiting = {q: sum(sizes[i * per : (i + 1) * per]) for i, q in enumerate(QUEUES)}
    reserved = {q: 0 for q in QUEUES}
    for _, raw in r.hscan_iter(UNACKED):
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, IndexError, TypeError):
            routing_key = "unknown"
        reserved[routing_key] = reserved.get(routing_key, 0) + 1
    return waiting, reserved


def snapshot(jobs: JobStore, limit: int | None = None) -> Snapshot:
    """Broker depths, live workers and both kinds' index views (`limit` is ignored: the
    indexes make every read constant-cost)."""
    waiting, reserved = broker_depths(jobs.r)
    trajectories = TrajectoryStore(jobs.r, jobs.retention_s)
    views = [store.view(QUEUES) for store in (jobs, trajectories)]
    return Snapshot(waiting=waiting, reserved=reserved, workers=jobs.workers(), views=views)


def worker_age_s(worker: dict[str, Any], now: datetime) -> float | None:
    seen = _time(worker.get("last_seen"))
    return (now - seen).total_seconds() if seen else None

"""One read of Redis that the queue endpoint and the metrics both report from.

Broker side (kombu's Redis transport, default key names): a queue's waiting messages are the
list named after the queue, plus one list per priority step named "<queue>\\x06\\x16<step>"
(steps 3, 6, 9). A message a worker has taken but not acknowledged (acks_late: the whole time
its job runs) moves to the hash "unacked" (delivery tag → JSON [message, exchange,
routing_key]), indexed by the sorted set "unacked_index"; the routing key is the queue name
with our direct-exchange queues, which gives the per-queue reserved count.

Job side: the job store's rows (tasks.jobstore, a pipelined read of a few fields per job) give
the counts by status, the running jobs and the oldest queued job. Worker heartbeats give the
workers online.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from tasks import reaper
from tasks.celery_app import QUEUES
from tasks.jobstore import JobRow, JobStore
from tasks.settings import Settings
from tasks.spec import JobStatus

log = logging.getLogger("sharpness.gateway")

PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)  # step 0 is the bare queue name
UNACKED = "unacked"


def reap(store: JobStore, settings: Settings, celery: Any) -> list[reaper.Reaped]:
    """Requeue (or fail, or cancel) the runs whose worker stopped beating, as the workers'
    own sweep does: the gateway notices first when no worker is left. Never fails a read."""
    try:
        return reaper.sweep(store, settings, reaper.celery_sender(celery))
    except Exception:
        log.exception("reaper sweep failed")
        return []


@dataclass
class Snapshot:
    waiting: dict[str, int]
    reserved: dict[str, int]
    workers: list[dict[str, Any]]
    jobs: list[JobRow] = field(default_factory=list)
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def by_status(self) -> dict[str, int]:
        counts = {s.value: 0 for s in JobStatus}
        for row in self.jobs:
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    def queued(self, queue: str | None = None) -> list[JobRow]:
        return [
            r
            for r in self.jobs
            if r.status == JobStatus.queued.value and (queue is None or r.queue == queue)
        ]

    def oldest_queued_age_s(self, queue: str | None = None) -> float | None:
        times = [r.created_at for r in self.queued(queue) if r.created_at]
        return (self.taken_at - min(times)).total_seconds() if times else None

    def running(self) -> list[JobRow]:
        return [r for r in self.jobs if r.status == JobStatus.running.value]


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
    waiting, reserved = broker_depths(jobs.r)
    return Snapshot(
        waiting=waiting, reserved=reserved, workers=jobs.workers(), jobs=jobs.rows(limit)
    )


def worker_age_s(worker: dict[str, Any], now: datetime) -> float | None:
    seen = _time(worker.get("last_seen"))
    return (now - seen).total_seconds() if seen else None

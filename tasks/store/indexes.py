"""The per-status and label indexes of one kind of record, and their one-time backfill.

Kept in the same MULTI as every status change (create, claim, end_run, finish, delete), so
counts, the queue view and filtered listing never read every record (keys: tasks.store.keys):
the status sets, the queued set of each queue, the ended set (scored by expiry,
tasks.store.retention), one set per label pair and the id -> label keys hash. Records written
before an index existed are indexed once (`ensure`), under a lock, by the first gateway."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from tasks.contract.spec import JobStatus
from tasks.store.codec import timestamp
from tasks.store.connection import texts
from tasks.store.keys import RecordKeys
from tasks.store.retention import Retention

INDEX_VERSION = "2"  # 2: label indexes
INDEXING_LOCK_S = 600
BACKFILL_CHUNK = 500
ROW_FIELDS = ("status", "queue", "created_at", "started_at", "finished_at", "worker", "device")
BACKFILL_FIELDS = ("status", "queue", "created_at", "finished_at", "spec")


@dataclass
class JobRow:
    """The few fields of a record the ops views need, without its spec or results."""

    id: str
    status: str
    queue: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    device: str | None
    kind: str = "job"


@dataclass
class IndexView:
    """What the per-status indexes say about one kind of record, read in one round trip."""

    kind: str
    by_status: dict[str, int]
    queued: dict[str, int]  # queued records per queue
    oldest_queued: dict[str, datetime | None]  # creation time of the oldest queued, per queue
    running: list[JobRow]


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class StatusIndexes:
    """Index moves queued onto a caller's MULTI, drops, the backfill and the index view."""

    def __init__(self, client: redis.Redis, keys: RecordKeys, retention: Retention) -> None:
        self.r = client
        self.keys = keys
        self.retention = retention

    # ---------------------------------------------------------------- moves
    def move(
        self,
        pipe: Any,
        record_id: str,
        status: JobStatus,
        created: float | None,
        queue: str | None,
        finished: float | None = None,
        new: bool = False,
    ) -> None:
        """Queue onto `pipe` (a MULTI) the index moves of `record_id` entering `status`
        (`new`: a record just made, in no index yet)."""
        for other in JobStatus:
            if other != status and not new:
                pipe.zrem(self.keys.status(other), record_id)
        if created is not None:
            pipe.zadd(self.keys.status(status), {record_id: created})
            if status == JobStatus.queued and queue:
                pipe.zadd(self.keys.queued(queue), {record_id: created})
        if status != JobStatus.queued and queue:
            pipe.zrem(self.keys.queued(queue), record_id)
        if not status.terminal and not new:  # live again (a race with a cancel): no expiry
            self.retention.keep(pipe, record_id)
        if status.terminal:
            self.retention.expire_ended(pipe, record_id, finished)

    def unindex(
        self,
        pipe: Any,
        ids: list[str],
        queue: str | None = None,
        label_keys: set[str] | None = None,
    ) -> None:
        """Queue onto `pipe` the removal of `ids` from every index; `label_keys` are the label
        indexes they are in (`label_keys_of`, read before the pipeline)."""
        pipe.zrem(self.keys.index, *ids)
        for status in JobStatus:
            pipe.zrem(self.keys.status(status), *ids)
        pipe.zrem(self.keys.ended(), *ids)
        pipe.srem(self.keys.running(), *ids)
        if queue:
            pipe.zrem(self.keys.queued(queue), *ids)
        for key in label_keys or ():
            pipe.zrem(key, *ids)
        pipe.hdel(self.keys.labels(), *ids)

    def add_labels(self, pipe: Any, record_id: str, labels: dict[str, str], created: float) -> None:
        """Queue onto `pipe` the record's entries in the label indexes (labels never change)."""
        if not labels:
            return
        keys = [self.keys.label(k, v) for k, v in labels.items()]
        for key in keys:
            pipe.zadd(key, {record_id: created})
        pipe.hset(self.keys.labels(), record_id, json.dumps(keys))

    def label_keys_of(self, ids: list[str]) -> set[str]:
        """The label indexes that hold any of `ids`."""
        found: set[str] = set()
        for keys in self.r.hmget(self.keys.labels(), ids) if ids else ():
            found.update(json.loads(keys) if keys else ())
        return found

    def drop(self, ids: list[str]) -> None:
        """Delete the records `ids` and take them out of every index (their retention is over;
        Redis may have expired their hashes already)."""
        if not ids:
            return
        labels = self.label_keys_of(ids)
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(*[self.keys.record(i) for i in ids])
        self.unindex(pipe, ids, label_keys=labels)
        pipe.execute()

    # ------------------------------------------------------------- backfill
    def ensure(self) -> bool:
        """Build the indexes once from the creation-time index (records written before the
        indexes existed). Idempotent; the first caller takes a lock and the others go on
        without waiting. True when the indexes are complete."""
        if self.r.get(self.keys.indexed()) == INDEX_VERSION:
            return True
        if not self.r.set(self.keys.indexing(), 1, nx=True, ex=INDEXING_LOCK_S):
            return False
        try:
            start = 0
            while ids := texts(self.r.zrange(self.keys.index, start, start + BACKFILL_CHUNK - 1)):
                self.backfill(ids)
                start += len(ids)
            self.r.set(self.keys.indexed(), INDEX_VERSION)
        finally:
            self.r.delete(self.keys.indexing())
        return True

    def backfill(self, ids: list[str]) -> None:
        """Index one chunk of records, as they are now (a record that changes meanwhile
        retries the chunk)."""
        keys = [self.keys.record(i) for i in ids]
        with self.r.pipeline() as pipe:
            for _ in range(10):
                try:
                    pipe.watch(*keys)
                    read = self.r.pipeline(transaction=False)
                    for k in keys:
                        read.hmget(k, BACKFILL_FIELDS)
                        read.pttl(k)
                    out = read.execute()
                    gone = [i for i, (status, *_) in zip(ids, out[0::2], strict=True) if not status]
                    gone_labels = self.label_keys_of(gone)
                    pipe.multi()
                    for record_id, values, ttl_ms in zip(ids, out[0::2], out[1::2], strict=True):
                        if not values[0]:  # gone: drop it from the index too
                            self.unindex(pipe, [record_id], label_keys=gone_labels)
                        else:
                            self._backfill_one(pipe, record_id, values, ttl_ms)
                    pipe.execute()
                    return
                except redis.WatchError:
                    time.sleep(0.01)

    def _backfill_one(
        self, pipe: Any, record_id: str, values: list[str | None], ttl_ms: int
    ) -> None:
        """Queue onto `pipe` the index entries of one existing record."""
        status, queue, created, finished, spec = values
        st = JobStatus(str(status))
        ended = timestamp(finished) or timestamp(created) or time.time()
        self.move(pipe, record_id, st, timestamp(created), queue, ended)
        labels = json.loads(spec).get("labels") if spec else None
        if labels and created:
            self.add_labels(pipe, record_id, labels, timestamp(created) or 0.0)
        if st.terminal:
            left_ms = self.retention.left_ms(ttl_ms, ended)
            pipe.pexpire(self.keys.record(record_id), left_ms)
            pipe.zadd(self.keys.ended(), {record_id: time.time() + left_ms / 1000})
        elif st == JobStatus.running:
            pipe.sadd(self.keys.running(), record_id)

    # ----------------------------------------------------------------- view
    def view(self, queues: tuple[str, ...] | list[str]) -> IndexView:
        """Counts by status, queued per queue and its oldest, the running rows: a constant
        number of round trips whatever the number of records."""
        for _ in range(2):
            pipe = self.r.pipeline(transaction=False)
            pipe.get(self.keys.indexed())
            for status in JobStatus:
                pipe.zcard(self.keys.status(status))
            for q in queues:
                pipe.zcard(self.keys.queued(q))
                pipe.zrange(self.keys.queued(q), 0, 0, withscores=True)
            pipe.zrange(self.keys.status(JobStatus.running), 0, -1)
            out = pipe.execute()
            if out[0] == INDEX_VERSION or not self.ensure():
                break
        n = len(JobStatus)
        by_status = {s.value: int(c) for s, c in zip(JobStatus, out[1 : 1 + n], strict=True)}
        queued: dict[str, int] = {}
        oldest: dict[str, datetime | None] = {}
        for i, q in enumerate(queues):
            count, first = out[1 + n + 2 * i], out[2 + n + 2 * i]
            queued[q] = int(count)
            oldest[q] = datetime.fromtimestamp(first[0][1], UTC) if first else None
        return IndexView(self.keys.kind, by_status, queued, oldest, self.rows_of(out[-1]))

    def rows_of(self, ids: list[str]) -> list[JobRow]:
        """The given records as rows (one pipelined HMGET each); missing ones are skipped."""
        pipe = self.r.pipeline(transaction=False)
        for record_id in ids:
            pipe.hmget(self.keys.record(record_id), ROW_FIELDS)
        rows = []
        for record_id, values in zip(ids, pipe.execute(), strict=True):
            v = dict(zip(ROW_FIELDS, values, strict=True))
            if not v["status"]:
                continue
            rows.append(
                JobRow(
                    id=record_id,
                    status=v["status"],
                    queue=v["queue"],
                    created_at=_when(v["created_at"]),
                    started_at=_when(v["started_at"]),
                    finished_at=_when(v["finished_at"]),
                    worker=v["worker"] or None,
                    device=v["device"] or None,
                    kind=self.keys.kind,
                )
            )
        return rows

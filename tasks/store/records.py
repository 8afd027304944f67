"""Run records in Redis, shared by the gateway (creates, reads, cancels) and the worker.

`RecordStore` is what callers use for one kind of run record; it composes the store's parts,
each a module of this package (listed in tasks/store/__init__.py): the key layout, the record
codec, the run lifecycle, the indexes, paging, retention, metrics, idempotency, the run lock,
the broker's messages and, for jobs, the workers' heartbeats.

This module keeps create, read, list, delete and cancel, and hands everything else to those
parts. `JobStore` adds the job record's shape, the worker heartbeats and the rows the ops views
read; tasks.store.trajectories adds the trajectory record.

Every update is a field-level HSET, so the gateway's cancel flag and the worker's progress
never overwrite each other. Records survive gateway restarts, and with AOF on, Redis restarts;
they expire only after they ended (tasks.store.retention).
"""

from __future__ import annotations

import builtins
import uuid
from datetime import datetime
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import redis

from tasks.contract.spec import Job, JobSpec, JobStatus, MeasureProgress, Problem
from tasks.settings import get_settings
from tasks.store import codec
from tasks.store.broker import BrokerMessages
from tasks.store.codec import RecordCodec, now
from tasks.store.connection import (
    REDIS_RETRY_S,
    hash_fields,
    quick_client,
    redis_client,
    text,
    text_hash,
    texts,
)
from tasks.store.heartbeats import WORKER_MEMORY_S, Heartbeats
from tasks.store.idempotency import IDEMPOTENCY_TTL_S, IdempotencyKeys
from tasks.store.indexes import IndexView, JobRow, StatusIndexes
from tasks.store.keys import JOBS, PREFIX, RecordKeys, enqueued_key, lock_key, worker_key
from tasks.store.lifecycle import Guard, Lifecycle
from tasks.store.lock import RunLock
from tasks.store.metrics import RUN_BUCKETS, WAIT_BUCKETS, Histogram, RunMetrics, bucket_of
from tasks.store.paging import Pager
from tasks.store.retention import PRUNE_BATCH, Retention

__all__ = [
    "IDEMPOTENCY_TTL_S",
    "PREFIX",
    "REDIS_RETRY_S",
    "RUN_BUCKETS",
    "TERMINAL",
    "WAIT_BUCKETS",
    "WORKER_MEMORY_S",
    "Histogram",
    "IndexView",
    "JobRow",
    "JobStore",
    "RecordStore",
    "bucket_of",
    "now",
    "quick_client",
    "redis_client",
]

TERMINAL = tuple(s for s in JobStatus if s.terminal)


class _Spec(Protocol):
    labels: dict[str, str]

    def model_dump_json(self) -> str: ...


class _Record(Protocol):
    id: str
    status: JobStatus
    created_at: datetime

    @property
    def spec(self) -> Any: ...


R = TypeVar("R", bound=_Record)
S = TypeVar("S", bound=_Spec)


class RecordStore(Generic[R, S]):
    """One kind of run record: a hash per record, its indexes, idempotency keys, its runs.

    A subclass names its keys (`KEYS`, from tasks.store.keys), its stored form (`CODEC`, from
    tasks.store.codec), the fields a new record starts with (`_initial_fields`) and how a hash
    becomes its record (`_decode`)."""

    KEYS: ClassVar[RecordKeys]
    CODEC: ClassVar[RecordCodec]
    KIND: ClassVar[str]  # the record's name in keys and messages: "job", "trajectory"
    INDEX: ClassVar[str]  # sorted set of ids by creation time
    IDEM: ClassVar[str]  # prefix of the Idempotency-Key → id keys

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "KEYS" in cls.__dict__:
            cls.KIND, cls.INDEX, cls.IDEM = cls.KEYS.kind, cls.KEYS.index, cls.KEYS.idem

    def __init__(self, client: redis.Redis, retention_s: float | None = None) -> None:
        """`retention_s`: how long an ended record is kept (default SHARPNESS_RETENTION_DAYS)."""
        self.r = client
        seconds = retention_s if retention_s is not None else get_settings().retention_s
        self.retention = Retention(client, self.KEYS, seconds)
        self.idempotency = IdempotencyKeys(client, self.KEYS.idem)
        self.indexes = StatusIndexes(client, self.KEYS, self.retention)
        self.metrics = RunMetrics(client, self.KEYS.kind)
        self.lock = RunLock(client)
        self.broker = BrokerMessages(client)
        self.lifecycle = Lifecycle(
            client,
            self.KEYS,
            self.CODEC,
            self.indexes,
            self.retention,
            self.metrics,
            self.idempotency,
            self._restart_fields,
        )
        self.pager: Pager[R] = Pager(client, self.KEYS, self._decode)

    @property
    def retention_s(self) -> float:
        """How long an ended record is kept, in seconds."""
        return self.retention.seconds

    @retention_s.setter
    def retention_s(self, seconds: float) -> None:
        self.retention.seconds = seconds

    @classmethod
    def from_url(
        cls, url: str, retry_s: float | None = None, connect_timeout_s: float = 5.0
    ) -> Self:
        """A store on its own client, which waits out a Redis restart (see `redis_client`)."""
        retry = REDIS_RETRY_S if retry_s is None else retry_s
        return cls(redis_client(url, retry, connect_timeout_s))

    def quick(self) -> Self:
        """The same store on a client that fails fast (`quick_client`)."""
        return type(self)(quick_client(self.r), retention_s=self.retention_s)

    def redis_uptime_s(self) -> float:
        """Seconds since the Redis server started (a restart resets it)."""
        return float(self.r.info("server").get("uptime_in_seconds", 0))

    # --------------------------------------------------------------- keys
    @classmethod
    def key(cls, record_id: str) -> str:
        return cls.KEYS.record(record_id)

    @staticmethod
    def lock_key(record_id: str) -> str:
        return lock_key(record_id)

    @staticmethod
    def _enqueued_key(record_id: str) -> str:
        return enqueued_key(record_id)

    @classmethod
    def running_key(cls) -> str:
        return cls.KEYS.running()

    @classmethod
    def status_key(cls, status: JobStatus | str) -> str:
        return cls.KEYS.status(status)

    @classmethod
    def queued_key(cls, queue: str) -> str:
        return cls.KEYS.queued(queue)

    @classmethod
    def ended_key(cls) -> str:
        return cls.KEYS.ended()

    @classmethod
    def label_key(cls, key: str, value: str) -> str:
        return cls.KEYS.label(key, value)

    @classmethod
    def labels_key(cls) -> str:
        return cls.KEYS.labels()

    @classmethod
    def _indexed_key(cls) -> str:
        return cls.KEYS.indexed()

    @classmethod
    def _indexing_key(cls) -> str:
        return cls.KEYS.indexing()

    # -------------------------------------------------------------- hooks
    def _initial_fields(self, spec: S) -> dict[str, Any]:
        """The kind's own fields of a new record (progress entries, empty result lists)."""
        raise NotImplementedError

    def _decode(self, record_id: str, raw: dict[str, str]) -> R:
        raise NotImplementedError

    def _restart_fields(self, raw: dict[str, str]) -> dict[str, Any]:
        """What a requeued record starts its next run with: every progress entry reset."""
        return {k: MeasureProgress().model_dump_json() for k in raw if k.startswith("progress:")}

    # ------------------------------------------------------------- create
    def create(self, spec: S, queue: str, idempotency_key: str | None = None) -> R:
        """Write a queued record; with an idempotency key, return the one made earlier under it."""
        if idempotency_key and (found := self.find_idempotent(idempotency_key)) is not None:
            return found
        record_id = uuid.uuid4().hex
        created_at = now()
        fields: dict[str, Any] = {
            **self.CODEC.encode(
                spec=spec,
                status=JobStatus.queued,
                queue=queue,
                created_at=created_at,
                attempts=0,
                cancel_requested=False,
            ),
            **self._initial_fields(spec),
        }
        if idempotency_key:  # so its end can expire the key with the record
            fields["idem"] = self.idempotency.key(idempotency_key)
        pipe = self.r.pipeline()
        pipe.hset(self.key(record_id), mapping=hash_fields(fields))
        pipe.zadd(self.INDEX, {record_id: created_at.timestamp()})
        self.indexes.move(
            pipe, record_id, JobStatus.queued, created_at.timestamp(), queue, new=True
        )
        self.indexes.add_labels(pipe, record_id, spec.labels, created_at.timestamp())
        if idempotency_key:
            self.idempotency.claim_in(pipe, idempotency_key, record_id)
        pipe.execute()
        winner = self.idempotency.holder(idempotency_key) if idempotency_key else None
        if winner and winner != record_id:  # lost a race
            self.delete(record_id)
            return self.get(winner)  # type: ignore[return-value]
        return self._decode(record_id, {k: str(v) for k, v in fields.items()})

    def find_idempotent(self, idempotency_key: str) -> R | None:
        """The record made earlier under `idempotency_key`, if any."""
        existing = self.idempotency.holder(idempotency_key)
        return self.get(existing) if existing else None

    def release_idempotency(self, idempotency_key: str, record_id: str) -> None:
        """Free the key (if it still names `record_id`) and the record's enqueue claim: its
        message could not be sent, so a retry with the key makes and enqueues a new record."""
        self.idempotency.release(idempotency_key, record_id)
        self.idempotency.release_enqueue(record_id)

    def mark_enqueued(self, record_id: str) -> bool:
        """Claim the sending of the record's one message; False if it was claimed before."""
        return self.idempotency.claim_enqueue(record_id)

    def delete(self, record_id: str) -> None:
        queue = text(self.r.hget(self.key(record_id), "queue"))
        labels = self.indexes.label_keys_of([record_id])
        pipe = self.r.pipeline()
        pipe.delete(self.key(record_id))
        self.indexes.unindex(pipe, [record_id], queue, labels)
        pipe.execute()

    # ------------------------------------------------ indexes and metrics
    def prune(self, limit: int = PRUNE_BATCH) -> int:
        """Drop the ended records whose retention is over from the indexes (Redis expires their
        hashes itself; they are deleted here too, so a record is listed exactly as long as it
        can be read); cost: the ids dropped. Returns how many."""
        ids = self.retention.due(limit)
        self.indexes.drop(ids)
        return len(ids)

    def ensure_indexes(self) -> bool:
        """Build the per-status indexes once from the creation-time index (records written
        before the indexes existed). True when the indexes are complete."""
        return self.indexes.ensure()

    def view(self, queues: tuple[str, ...] | list[str]) -> IndexView:
        """Counts by status, queued per queue and its oldest, the running rows: a constant
        number of round trips whatever the number of records."""
        self.prune()
        return self.indexes.view(queues)

    def rows_of(self, ids: list[str]) -> list[JobRow]:
        """The given records as rows (one pipelined HMGET each); missing ones are skipped."""
        return self.indexes.rows_of(ids)

    def ended_counts(self) -> dict[tuple[str, str, str], int]:
        """Runs ended, every kind: (kind, outcome, queue) -> count."""
        return self.metrics.ended_counts()

    def histograms(self, name: str) -> dict[tuple[str, ...], Histogram]:
        """A stored histogram (`run_seconds` or `queue_wait_seconds`), every kind, by labels."""
        return self.metrics.histograms(name)

    # --------------------------------------------------------------- read
    def get(self, record_id: str) -> R | None:
        raw = text_hash(self.r.hgetall(self.key(record_id)))
        return self._decode(record_id, raw) if raw else None

    def status(self, record_id: str) -> JobStatus | None:
        value = text(self.r.hget(self.key(record_id), "status"))
        return JobStatus(value) if value else None

    def page(
        self,
        status: JobStatus | None = None,
        labels: dict[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[R], str | None]:
        """Newest first. The cursor is the id of the last record of the previous page.

        With filters, the pages walk the smallest of their indexes (the status' and each label
        pair's) and read only its records, keeping those that match the other filters: the
        cost follows the records that carry the rarest filter, not the whole store."""
        if status is not None or labels:
            self.prune()
            self.ensure_indexes()
        return self.pager.page(status, labels or {}, limit, cursor)

    def running_ids(self) -> list[str]:
        """Ids of the records in status running (constant cost in the number of records)."""
        return sorted(texts(self.r.smembers(self.running_key())))

    def queued_ids(self, older_than_s: float, limit: int = 1_000) -> list[str]:
        """Ids of the oldest `limit` queued records created more than `older_than_s` ago."""
        return self.pager.queued_ids(older_than_s, limit)

    # ------------------------------------------------------------- cancel
    def request_cancel(self, record_id: str, by: str | None = None) -> R | None:
        """Flag a record for cancellation; a queued one is cancelled at once. `by` (a tenant's
        name) is noted as `cancelled_by` when it is the first to ask."""
        record = self.get(record_id)
        if record is None or record.status.terminal:
            return record
        if by is not None:
            self.r.hsetnx(self.key(record_id), "cancelled_by", by)
        self.r.hset(self.key(record_id), "cancel_requested", 1)
        if record.status == JobStatus.queued:
            self.finish(record_id, JobStatus.cancelled, only_if={JobStatus.queued})
        return self.get(record_id)

    def cancel_requested(self, record_id: str) -> bool:
        return self.r.hget(self.key(record_id), "cancel_requested") == "1"

    # ----------------------------------------------------------- run lock
    def acquire(self, record_id: str, worker: str, ttl_s: int) -> bool:
        """Take the per-record run lock; False if another live worker holds it."""
        return self.lock.acquire(record_id, worker, ttl_s)

    def refresh_lock(self, record_id: str, worker: str, ttl_s: int) -> bool:
        """Extend `worker`'s lock on the record; False if it is no longer that worker's."""
        return self.lock.refresh(record_id, worker, ttl_s)

    def release(self, record_id: str, worker: str | None = None) -> None:
        """Drop the run lock (only `worker`'s own, when given)."""
        self.lock.release(record_id, worker)

    def lock_holder(self, record_id: str) -> str | None:
        return self.lock.holder(record_id)

    # ------------------------------------------------------------- broker
    def restore_message(self, record_id: str) -> bool:
        """Put the record's unacknowledged broker message back at the head of its queue, now;
        False when no such message is held (then the caller sends a new one)."""
        return self.broker.restore(record_id)

    def message_ids(self, queues: tuple[str, ...] | list[str]) -> set[str]:
        """The record ids of the broker messages waiting in `queues` or delivered and not yet
        acknowledged: the records something will still run."""
        return self.broker.message_ids(queues)

    # --------------------------------------------------------------- runs
    def set_fields(self, record_id: str, epoch: int | None = None, **fields: Any) -> bool:
        """Field-level HSET; with `epoch`, only while the record's epoch is that (a run's
        writes): False when refused."""
        return self.lifecycle.set_fields(record_id, epoch, fields)

    def epoch(self, record_id: str) -> tuple[JobStatus | None, int]:
        """The record's status and epoch (the fencing token its current run writes with)."""
        return self.lifecycle.epoch(record_id)

    def mark_running(self, record_id: str, worker: str, device: str, versions: dict) -> int:
        """Start a run whatever the record's status; returns its attempt number. Runs use
        `claim`, which also returns the run's epoch and starts only a queued record."""
        claimed = self.lifecycle.claim(record_id, worker, device, versions, queued_only=False)
        assert claimed is not None
        return claimed[0]

    def claim(
        self, record_id: str, worker: str, device: str, versions: dict
    ) -> tuple[int, int] | None:
        """Start a run of a queued record: (attempt, epoch), the epoch being the fencing token
        every write of the run carries; None when the record is not queued (cancelled or
        taken meanwhile)."""
        return self.lifecycle.claim(record_id, worker, device, versions, queued_only=True)

    def set_progress(
        self,
        record_id: str,
        name: str | int,
        progress: MeasureProgress,
        epoch: int | None = None,
    ) -> bool:
        """One measure's (a job) or one checkpoint's (a trajectory) progress; with `epoch`
        (a run's writes), only while the record is at that epoch: False when refused."""
        field, value = self.CODEC.prefixed_field("progress", name, progress)
        return self.set_fields(record_id, epoch, **{field: value})

    def end_run(
        self,
        record_id: str,
        outcome: str,
        *,
        attempt: int | None = None,
        only_if_unlocked: bool = False,
        max_attempts: int | None = None,
        error: Problem | None = None,
        epoch: int | None = None,
    ) -> JobStatus | None:
        """End the running attempt without a result: back to `queued` (its worker shut down,
        or was lost), or `cancelled` when a cancel was asked for, or `failed` with `error`
        once `max_attempts` runs were started. The worker, device, start time and progress
        of the ended run are dropped from the record; `attempt_log` keeps them.

        Atomic and guarded: nothing happens unless the record is still running (and, when
        given, still on `attempt` and at `epoch`, and with `only_if_unlocked`, no worker holds
        its lock); the record's epoch moves on, so the ended run can write nothing more.
        Returns the new status, or None when nothing was changed."""
        guard = Guard(attempt, epoch)
        return self.lifecycle.end_run(
            record_id, outcome, guard, only_if_unlocked, max_attempts, error
        )

    def finish(
        self,
        record_id: str,
        status: JobStatus,
        results: dict[str, Any] | None = None,
        error: Problem | None = None,
        evaluation: dict[str, Any] | None = None,
        only_if: set[JobStatus] | None = None,
        attempt: int | None = None,
        epoch: int | None = None,
    ) -> bool:
        """Move a record to a terminal state atomically; never leave a terminal state. With
        `attempt`, only while the record still counts that run; with `epoch` (a run's end),
        only while the record is at the epoch the run claimed it with (a run declared lost,
        requeued or replaced writes nothing). The epoch moves on."""
        given = {"results": results, "error": error, "evaluation": evaluation}
        outputs = {k: v for k, v in given.items() if v is not None}
        allowed = only_if or {JobStatus.queued, JobStatus.running}
        return self.lifecycle.finish(record_id, status, outputs, allowed, Guard(attempt, epoch))


class JobStore(RecordStore[Job, JobSpec]):
    KEYS = JOBS
    CODEC = codec.JOB

    def __init__(self, client: redis.Redis, retention_s: float | None = None) -> None:
        super().__init__(client, retention_s=retention_s)
        self.heartbeats = Heartbeats(client)

    def _initial_fields(self, spec: JobSpec) -> dict[str, Any]:
        return dict(
            self.CODEC.prefixed_field("progress", m.name, MeasureProgress()) for m in spec.measures
        )

    def _decode(self, record_id: str, raw: dict[str, str]) -> Job:
        return Job(**self.CODEC.decode(record_id, raw))

    def list(
        self,
        status: JobStatus | None = None,
        labels: dict[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[builtins.list[Job], str | None]:
        """Newest first. The cursor is the id of the last job of the previous page."""
        return self.page(status, labels, limit, cursor)

    def rows(self, limit: int | None = None) -> builtins.list[JobRow]:
        """The newest `limit` jobs (all when None) as rows: one pipelined HMGET per job."""
        ids = self.r.zrevrange(self.INDEX, 0, -1 if limit is None else limit - 1)
        return self.rows_of(texts(ids))

    # ------------------------------------------------------------ workers
    @staticmethod
    def _worker_key(hostname: str) -> str:
        return worker_key(hostname)

    def heartbeat(self, hostname: str, device: str, ttl_s: int = 30, **info: str) -> None:
        """Write `hostname`'s heartbeat (device, last_seen and any `info` fields), expiring
        after `ttl_s`, and its time in the workers index."""
        self.heartbeats.beat(hostname, device, ttl_s, **info)

    def worker_alive(self, hostname: str | None) -> bool:
        """Whether `hostname`'s heartbeat has not expired."""
        return self.heartbeats.alive(hostname)

    def forget_worker(self, hostname: str) -> None:
        """A worker that stops cleanly leaves the list at once rather than when it expires."""
        self.heartbeats.forget(hostname)

    def worker_times(self) -> dict[str, float]:
        """Hostname -> last heartbeat (epoch seconds) of the workers seen lately."""
        return self.heartbeats.times()

    def workers(self) -> builtins.list[dict[str, str]]:
        """The workers whose heartbeat has not expired, by hostname (no SCAN of the keys)."""
        return self.heartbeats.workers()

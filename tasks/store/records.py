"""Run records in Redis, shared by the gateway (creates, reads, cancels) and the worker.

Every Redis key of jobs, trajectories and workers is spelled in this module and in
tasks.store.trajectories; everything else goes through the stores' methods.

Layout (prefix `sharpness:`):
    job:{id}            hash: spec, status, queue, created_at, started_at, finished_at, results,
                        evaluation, error, worker, device, versions, attempts, cancel_requested,
                        and one field `progress:{measure}` per measure (JSON)
    jobs                sorted set of ids scored by creation time (listing, pagination)
    idem:{key}          job id created under an Idempotency-Key (24 h)
    enqueued:{id}       set when the record's one Celery message is sent under an
                        Idempotency-Key (24 h), so racing resubmits enqueue it once
    lock:{id}           held by the one worker running the record (SET NX with expiry); jobs
                        and trajectories share it (ids are unique uuids)
    workers:{hostname}  heartbeat hash with device and last_seen (expires)
    workers             sorted set of worker hostnames by last heartbeat (10 min memory):
                        the workers list and `celery_worker_up` without a SCAN over all keys
    running:{kind}      set of the ids of records in status running (the reaper's worklist)

Per-status indexes (`{index}` is `jobs` or `trajectories`), kept in the same MULTI as every
status change (create, mark_running, end_run, finish, delete), so counts, the queue view and
status-filtered listing never read every record:
    {index}:status:{status}   sorted set of the ids in that status, scored by creation time
    {index}:queued:{queue}    queued ids routed to that queue, scored by creation time
    {index}:ended             terminal ids scored by the time they expire (finish time plus
                              the retention of the process that ended them): what `prune` drops
    {index}:label:["k","v"]   ids of the records labelled k=v (the pair as JSON), scored by
                              creation time: label-filtered listing walks the smallest of its
                              filters' indexes, not every record
    {index}:labels            hash id -> JSON list of that record's label index keys (the hash
                              may expire before `prune` drops the id; this does not)
    indexed:{kind}            index version marker; absent: the indexes are rebuilt once from
                              `{index}` (records written before they existed), under the lock
    indexing:{kind}           so that one gateway rebuilds while others go on serving

Retention: when a record ends, its hash (and its enqueue claim and Idempotency-Key, when they
would outlive it) expire SHARPNESS_RETENTION_DAYS later; queued and running records carry no
expiry. `prune` drops from the indexes, by score, the ended ids whose expiry time has passed.

Metrics the ops views report, written in the MULTI that ends a record, so every gateway
process reads the same numbers:
    metrics:ended               hash `{kind}|{outcome}|{queue}` -> runs ended that way
    metrics:run_seconds         hash `{kind}|{outcome}|{queue}|{le}` -> runs whose last attempt
                                took at most `le` seconds (not cumulative; `...|sum` the total)
    metrics:queue_wait_seconds  hash `{kind}|{queue}|{le}` -> runs that waited from creation to
                                their first start at most `le` seconds (and `...|sum`)

Each record also keeps `attempt_log`, a JSON list with one entry per ended run (attempt,
worker, started_at, ended_at, outcome), `attempts`, the number of runs started, and `epoch`,
the fencing token of its runs: every claim (`claim`, `mark_running`), requeue, reap, hand-back
(`end_run`) and end (`finish`, cancel included) increments it in the transaction that changes
the status. A run writes only with the epoch its claim returned, and every such write (its
progress, its partial results, its end) is a compare-and-set on (record, epoch) inside Redis
(a Lua script or WATCH/MULTI): a run that lost its lease (paused, reaped, requeued, replaced)
can write nothing at all, even while the record is `queued` again with the same `attempts`.
Kombu's own `unacked` hash and queue lists are read here too (`restore_message`), so a lost
run's message goes back to its queue at once.

`RecordStore` holds what every kind of run shares (create with idempotency, read, list, the
cancel flag, the run lock, progress, the atomic never-leave-terminal `finish`); `JobStore`
adds the job record's shape, the worker heartbeats and the rows the ops views read.

Every update is a field-level HSET, so the gateway's cancel flag and the worker's progress
never overwrite each other. Records survive gateway restarts, and with AOF on, Redis restarts;
they expire only after they ended (see retention above).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import redis

from tasks.contract import problem_types
from tasks.contract.spec import Job, JobSpec, JobStatus, MeasureProgress, MeasureResult, Problem
from tasks.settings import get_settings

PREFIX = "sharpness:"
# kombu's Redis transport: unacknowledged messages by delivery tag, and their times
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
# and a queue's lists: the queue's name for priority 0, name + separator + step for the others
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITIES = (3, 6, 9)
IDEMPOTENCY_TTL_S = 86_400
INDEX_VERSION = "2"  # 2: label indexes
INDEXING_LOCK_S = 600
BACKFILL_CHUNK = 500
PRUNE_BATCH = 1_000
WORKERS = f"{PREFIX}workers"
WORKER_MEMORY_S = 600  # a worker whose heartbeat stopped is reported down this long
METRIC_ENDED = f"{PREFIX}metrics:ended"
METRIC_RUN_SECONDS = f"{PREFIX}metrics:run_seconds"
METRIC_QUEUE_WAIT = f"{PREFIX}metrics:queue_wait_seconds"
# histogram upper bounds (seconds); "+Inf" is the last bucket
RUN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
WAIT_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
TERMINAL = tuple(s for s in JobStatus if s.terminal)


def now() -> datetime:
    return datetime.now(UTC)


REDIS_RETRY_S = 30.0  # how long a store call waits out a Redis restart before it fails


def redis_client(
    url: str, retry_s: float = REDIS_RETRY_S, connect_timeout_s: float = 5.0
) -> redis.Redis:
    """A client whose commands survive a short Redis outage: redis-py's own Retry, with
    exponential backoff (0.1 s doubling to 2 s between tries), on ConnectionError and
    TimeoutError, for about `retry_s` seconds in all; only then does the error reach the
    caller. So a restart of a few seconds (with AOF on) costs a running job a pause in its
    progress writes, not its attempt, and no write is lost. A retried command may run twice if
    the connection broke after Redis applied it; every store write is a field set or a guarded
    transaction (a WATCH broken by the outage is retried by the store's own loop)."""
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError, TimeoutError
    from redis.retry import Retry

    backoff = ExponentialBackoff(cap=2.0, base=0.1)
    retries, total = 0, 0.0
    while total < retry_s:
        total += backoff.compute(retries)
        retries += 1
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(backoff, retries, supported_errors=(ConnectionError, TimeoutError)),
        retry_on_error=[ConnectionError, TimeoutError],
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=30,
        health_check_interval=15,
    )


def quick_client(client: redis.Redis, retry_s: float = 0.3) -> redis.Redis:
    """A client on the same server as `client` that gives up quickly (about `retry_s` of
    retries, 1 s to connect, 5 s for an answer): what a run uses between engine iterations,
    so an outage costs it a skipped write, not its computation's time."""
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError, TimeoutError
    from redis.retry import Retry

    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    backoff = ExponentialBackoff(cap=0.2, base=0.05)
    kwargs.update(
        retry=Retry(backoff, max(1, int(retry_s / 0.1)), (ConnectionError, TimeoutError)),
        retry_on_error=[ConnectionError, TimeoutError],
        socket_connect_timeout=1.0,
        socket_timeout=5.0,
        health_check_interval=0,
    )
    return redis.Redis(connection_pool=redis.ConnectionPool(pool.connection_class, **kwargs))


# HSET the field/value pairs ARGV[2..] on KEYS[1] only while its epoch is ARGV[1]; 1 if written
FENCED_HSET = """
local epoch = redis.call('HGET', KEYS[1], 'epoch') or '0'
if epoch ~= ARGV[1] or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def bucket_of(seconds: float, bounds: tuple[float, ...]) -> str:
    """The histogram bucket (its upper bound as Prometheus spells it) that `seconds` falls in."""
    for b in bounds:
        if seconds <= b:
            return str(b)
    return "+Inf"


@dataclass
class Histogram:
    """One labelled series of a histogram stored by the stores: per-bucket (not cumulative)
    counts by upper bound, "+Inf" last, and the sum."""

    buckets: dict[str, int]
    sum: float

    def cumulative(self, bounds: tuple[float, ...]) -> list[tuple[str, int]]:
        out, total = [], 0
        for le in (*[str(b) for b in bounds], "+Inf"):
            total += self.buckets.get(le, 0)
            out.append((le, total))
        return out


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


ROW_FIELDS = ("status", "queue", "created_at", "started_at", "finished_at", "worker", "device")


@dataclass
class IndexView:
    """What the per-status indexes say about one kind of record, read in one round trip."""

    kind: str
    by_status: dict[str, int]
    queued: dict[str, int]  # queued records per queue
    oldest_queued: dict[str, datetime | None]  # creation time of the oldest queued, per queue
    running: list[JobRow]


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
    """One kind of run record: a hash per record, a creation-time index, idempotency keys.

    A subclass names its keys (`KIND`, `INDEX`, `IDEM`), the fields a new record starts with
    (`_initial_fields`) and how a hash becomes its record (`_decode`)."""

    KIND: ClassVar[str]  # the record's name in keys and messages: "job", "trajectory"
    INDEX: ClassVar[str]  # sorted set of ids by creation time
    IDEM: ClassVar[str]  # prefix of the Idempotency-Key → id keys

    def __init__(self, client: redis.Redis, retention_s: float | None = None) -> None:
        """`retention_s`: how long an ended record is kept (default SHARPNESS_RETENTION_DAYS)."""
        self.r = client
        self.retention_s = retention_s if retention_s is not None else get_settings().retention_s

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
        return f"{PREFIX}{cls.KIND}:{record_id}"

    @staticmethod
    def lock_key(record_id: str) -> str:
        return f"{PREFIX}lock:{record_id}"

    @staticmethod
    def _enqueued_key(record_id: str) -> str:
        return f"{PREFIX}enqueued:{record_id}"

    @classmethod
    def running_key(cls) -> str:
        return f"{PREFIX}running:{cls.KIND}"

    @classmethod
    def status_key(cls, status: JobStatus | str) -> str:
        return f"{cls.INDEX}:status:{JobStatus(status).value}"

    @classmethod
    def queued_key(cls, queue: str) -> str:
        return f"{cls.INDEX}:queued:{queue}"

    @classmethod
    def ended_key(cls) -> str:
        return f"{cls.INDEX}:ended"

    @classmethod
    def label_key(cls, key: str, value: str) -> str:
        return f"{cls.INDEX}:label:{json.dumps([key, value], separators=(',', ':'))}"

    @classmethod
    def labels_key(cls) -> str:
        return f"{cls.INDEX}:labels"

    @classmethod
    def _indexed_key(cls) -> str:
        return f"{PREFIX}indexed:{cls.KIND}"

    @classmethod
    def _indexing_key(cls) -> str:
        return f"{PREFIX}indexing:{cls.KIND}"

    # -------------------------------------------------------------- hooks
    def _initial_fields(self, spec: S) -> dict[str, Any]:
        """The kind's own fields of a new record (progress entries, empty result lists)."""
        raise NotImplementedError

    def _decode(self, record_id: str, raw: dict[str, str]) -> R:
        raise NotImplementedError

    def _restart_fields(self, raw: dict[str, str]) -> dict[str, Any]:
        """What a requeued record starts its next run with: every progress entry reset."""
        return {k: MeasureProgress().model_dump_json() for k in raw if k.startswith("progress:")}

    @staticmethod
    def _common(record_id: str, raw: dict[str, str]) -> dict[str, Any]:
        """The fields every record has, decoded."""

        def when(name: str) -> datetime | None:
            return datetime.fromisoformat(raw[name]) if raw.get(name) else None

        error = Problem.model_validate_json(raw["error"]) if raw.get("error") else None
        if error is not None:  # a record written under the worker's former type prefix
            error.type = problem_types.current(error.type)

        return {
            "id": record_id,
            "status": JobStatus(raw["status"]),
            "queue": raw.get("queue", "cpu"),
            "created_at": datetime.fromisoformat(raw["created_at"]),
            "started_at": when("started_at"),
            "finished_at": when("finished_at"),
            "error": error,
            "worker": raw.get("worker") or None,
            "device": raw.get("device") or None,
            "versions": json.loads(raw["versions"]) if raw.get("versions") else {},
            "attempts": int(raw.get("attempts", 0)),
            "attempt_history": json.loads(raw.get("attempt_log") or "[]"),
            "cancel_requested": raw.get("cancel_requested") == "1",
        }

    @staticmethod
    def _progress(raw: dict[str, str]) -> dict[str, MeasureProgress]:
        """The `progress:{name}` fields by name."""
        return {
            k.split(":", 1)[1]: MeasureProgress.model_validate_json(v)
            for k, v in raw.items()
            if k.startswith("progress:")
        }

    # ------------------------------------------------------------- create
    def create(self, spec: S, queue: str, idempotency_key: str | None = None) -> R:
        """Write a queued record; with an idempotency key, return the one made earlier under it."""
        idem = f"{self.IDEM}{idempotency_key}" if idempotency_key else None
        if idem and (existing := self.r.get(idem)) and (found := self.get(existing)) is not None:
            return found
        record_id = uuid.uuid4().hex
        created_at = now()
        fields: dict[str, Any] = {
            "spec": spec.model_dump_json(),
            "status": JobStatus.queued.value,
            "queue": queue,
            "created_at": created_at.isoformat(),
            "attempts": 0,
            "cancel_requested": 0,
            **self._initial_fields(spec),
        }
        if idem:
            fields["idem"] = idem  # so its end can expire the key with the record
        pipe = self.r.pipeline()
        pipe.hset(self.key(record_id), mapping=fields)
        pipe.zadd(self.INDEX, {record_id: created_at.timestamp()})
        self._index(pipe, record_id, JobStatus.queued, created_at.timestamp(), queue, new=True)
        self._index_labels(pipe, record_id, spec.labels, created_at.timestamp())
        if idem:
            pipe.set(idem, record_id, ex=IDEMPOTENCY_TTL_S, nx=True)
        pipe.execute()
        if idem and (winner := self.r.get(idem)) and winner != record_id:  # lost a race
            self.delete(record_id)
            return self.get(winner)  # type: ignore[return-value]
        return self._decode(record_id, {k: str(v) for k, v in fields.items()})

    def find_idempotent(self, idempotency_key: str) -> R | None:
        """The record made earlier under `idempotency_key`, if any."""
        existing = self.r.get(f"{self.IDEM}{idempotency_key}")
        return self.get(existing) if existing else None

    def release_idempotency(self, idempotency_key: str, record_id: str) -> None:
        """Free the key (if it still names `record_id`) and the record's enqueue claim: its
        message could not be sent, so a retry with the key makes and enqueues a new record."""
        idem = f"{self.IDEM}{idempotency_key}"
        if self.r.get(idem) == record_id:
            self.r.delete(idem)
        self.r.delete(self._enqueued_key(record_id))

    def mark_enqueued(self, record_id: str) -> bool:
        """Claim the sending of the record's one message; False if it was claimed before."""
        key = self._enqueued_key(record_id)
        return bool(self.r.set(key, 1, nx=True, ex=IDEMPOTENCY_TTL_S))

    def delete(self, record_id: str) -> None:
        queue = self.r.hget(self.key(record_id), "queue")
        labels = self._label_keys_of([record_id])
        pipe = self.r.pipeline()
        pipe.delete(self.key(record_id))
        self._unindex(pipe, [record_id], queue, labels)
        pipe.execute()

    # ------------------------------------------------------------ indexes
    def _index(
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
                pipe.zrem(self.status_key(other), record_id)
        if created is not None:
            pipe.zadd(self.status_key(status), {record_id: created})
            if status == JobStatus.queued and queue:
                pipe.zadd(self.queued_key(queue), {record_id: created})
        if status != JobStatus.queued and queue:
            pipe.zrem(self.queued_key(queue), record_id)
        if not status.terminal and not new:  # live again (a race with a cancel): no expiry
            pipe.zrem(self.ended_key(), record_id)
            pipe.persist(self.key(record_id))
        if status.terminal:
            expires = (finished or time.time()) + self.retention_s
            pipe.zadd(self.ended_key(), {record_id: expires})
            pipe.pexpire(self.key(record_id), self._retention_ms())
            if self.retention_s < IDEMPOTENCY_TTL_S:
                pipe.pexpire(self._enqueued_key(record_id), self._retention_ms())

    def _retention_ms(self) -> int:
        return max(1, int(self.retention_s * 1000))

    def _unindex(
        self,
        pipe: Any,
        ids: list[str],
        queue: str | None = None,
        label_keys: set[str] | None = None,
    ) -> None:
        """Queue onto `pipe` the removal of `ids` from every index; `label_keys` are the label
        indexes they are in (`_label_keys_of`, read before the pipeline)."""
        pipe.zrem(self.INDEX, *ids)
        for status in JobStatus:
            pipe.zrem(self.status_key(status), *ids)
        pipe.zrem(self.ended_key(), *ids)
        pipe.srem(self.running_key(), *ids)
        if queue:
            pipe.zrem(self.queued_key(queue), *ids)
        for key in label_keys or ():
            pipe.zrem(key, *ids)
        pipe.hdel(self.labels_key(), *ids)

    def _index_labels(
        self, pipe: Any, record_id: str, labels: dict[str, str], created: float
    ) -> None:
        """Queue onto `pipe` the record's entries in the label indexes (labels never change)."""
        if not labels:
            return
        keys = [self.label_key(k, v) for k, v in labels.items()]
        for key in keys:
            pipe.zadd(key, {record_id: created})
        pipe.hset(self.labels_key(), record_id, json.dumps(keys))

    def _label_keys_of(self, ids: list[str]) -> set[str]:
        """The label indexes that hold any of `ids`."""
        found: set[str] = set()
        for keys in self.r.hmget(self.labels_key(), ids) if ids else ():
            found.update(json.loads(keys) if keys else ())
        return found

    def _expire_idem(self, pipe: Any, raw: dict[str, str], record_id: str) -> None:
        """With a retention under a day, the record's Idempotency-Key (while it still names
        this record) ends with it. Call before `pipe.multi()`: it reads the key."""
        idem = raw.get("idem")
        if idem and self.retention_s < IDEMPOTENCY_TTL_S and self.r.get(idem) == record_id:
            pipe.pexpire(idem, self._retention_ms())

    def _observe_end(self, pipe: Any, raw: dict[str, str], status: JobStatus, at: datetime) -> None:
        """Count the ended run and observe its run time and queue wait, in the ending MULTI."""
        queue = raw.get("queue") or "cpu"
        labels = f"{self.KIND}|{status.value}|{queue}"
        pipe.hincrby(METRIC_ENDED, labels, 1)
        end = at.timestamp()
        if (started := _ts(raw.get("started_at"))) is not None:
            seconds = max(0.0, end - started)
            pipe.hincrby(METRIC_RUN_SECONDS, f"{labels}|{bucket_of(seconds, RUN_BUCKETS)}", 1)
            pipe.hincrbyfloat(METRIC_RUN_SECONDS, f"{labels}|sum", seconds)
        log = json.loads(raw.get("attempt_log") or "[]")
        first = (log[0].get("started_at") if log else None) or raw.get("started_at")
        created = _ts(raw.get("created_at"))
        if first and created is not None:
            wait = max(0.0, _ts(first) - created)  # type: ignore[operator]
            prefix = f"{self.KIND}|{queue}"
            pipe.hincrby(METRIC_QUEUE_WAIT, f"{prefix}|{bucket_of(wait, WAIT_BUCKETS)}", 1)
            pipe.hincrbyfloat(METRIC_QUEUE_WAIT, f"{prefix}|sum", wait)

    def prune(self, limit: int = PRUNE_BATCH) -> int:
        """Drop the ended records whose retention is over from the indexes (Redis expires their
        hashes itself; they are deleted here too, so a record is listed exactly as long as it
        can be read); cost: the ids dropped. Returns how many."""
        ids = self.r.zrangebyscore(self.ended_key(), "-inf", time.time(), start=0, num=limit)
        if ids:
            labels = self._label_keys_of(ids)
            pipe = self.r.pipeline(transaction=False)
            pipe.delete(*[self.key(i) for i in ids])
            self._unindex(pipe, ids, label_keys=labels)
            pipe.execute()
        return len(ids)

    def ensure_indexes(self) -> bool:
        """Build the per-status indexes once from the creation-time index (records written
        before the indexes existed). Idempotent; the first caller takes a lock and the others
        go on without waiting. True when the indexes are complete."""
        if self.r.get(self._indexed_key()) == INDEX_VERSION:
            return True
        if not self.r.set(self._indexing_key(), 1, nx=True, ex=INDEXING_LOCK_S):
            return False
        try:
            start = 0
            while ids := self.r.zrange(self.INDEX, start, start + BACKFILL_CHUNK - 1):
                self._backfill(ids)
                start += len(ids)
            self.r.set(self._indexed_key(), INDEX_VERSION)
        finally:
            self.r.delete(self._indexing_key())
        return True

    def _backfill(self, ids: list[str]) -> None:
        keys = [self.key(i) for i in ids]
        fields = ("status", "queue", "created_at", "finished_at", "spec")
        with self.r.pipeline() as pipe:
            for _ in range(10):
                try:
                    pipe.watch(*keys)  # a record that changes meanwhile retries the chunk
                    read = self.r.pipeline(transaction=False)
                    for k in keys:
                        read.hmget(k, fields)
                        read.pttl(k)
                    out = read.execute()
                    gone = [i for i, (status, *_) in zip(ids, out[0::2], strict=True) if not status]
                    gone_labels = self._label_keys_of(gone)
                    pipe.multi()
                    for record_id, (status, queue, created, finished, spec), ttl_ms in zip(
                        ids, out[0::2], out[1::2], strict=True
                    ):
                        if not status:  # gone: drop it from the index too
                            self._unindex(pipe, [record_id], label_keys=gone_labels)
                            continue
                        st = JobStatus(status)
                        ended = _ts(finished) or _ts(created) or time.time()
                        self._index(pipe, record_id, st, _ts(created), queue, ended)
                        labels = json.loads(spec).get("labels") if spec else None
                        if labels and created:
                            self._index_labels(pipe, record_id, labels, _ts(created) or 0.0)
                        if st.terminal:
                            # an expiry set by the process that ended it stands (its own
                            # retention); none yet: it counts from the end, not from now
                            left_ms = (
                                ttl_ms
                                if ttl_ms > 0
                                else int((ended + self.retention_s - time.time()) * 1000)
                            )
                            left_ms = max(1, left_ms)
                            pipe.pexpire(self.key(record_id), left_ms)
                            pipe.zadd(self.ended_key(), {record_id: time.time() + left_ms / 1000})
                        elif st == JobStatus.running:
                            pipe.sadd(self.running_key(), record_id)
                    pipe.execute()
                    return
                except redis.WatchError:
                    time.sleep(0.01)

    def view(self, queues: tuple[str, ...] | list[str]) -> IndexView:
        """Counts by status, queued per queue and its oldest, the running rows: a constant
        number of round trips whatever the number of records."""
        self.prune()
        for _ in range(2):
            pipe = self.r.pipeline(transaction=False)
            pipe.get(self._indexed_key())
            for status in JobStatus:
                pipe.zcard(self.status_key(status))
            for q in queues:
                pipe.zcard(self.queued_key(q))
                pipe.zrange(self.queued_key(q), 0, 0, withscores=True)
            pipe.zrange(self.status_key(JobStatus.running), 0, -1)
            out = pipe.execute()
            if out[0] == INDEX_VERSION or not self.ensure_indexes():
                break
        n = len(JobStatus)
        by_status = {s.value: int(c) for s, c in zip(JobStatus, out[1 : 1 + n], strict=True)}
        queued: dict[str, int] = {}
        oldest: dict[str, datetime | None] = {}
        for i, q in enumerate(queues):
            count, first = out[1 + n + 2 * i], out[2 + n + 2 * i]
            queued[q] = int(count)
            oldest[q] = datetime.fromtimestamp(first[0][1], UTC) if first else None
        return IndexView(self.KIND, by_status, queued, oldest, self.rows_of(out[-1]))

    def rows_of(self, ids: list[str]) -> list[JobRow]:
        """The given records as rows (one pipelined HMGET each); missing ones are skipped."""
        pipe = self.r.pipeline(transaction=False)
        for record_id in ids:
            pipe.hmget(self.key(record_id), ROW_FIELDS)
        rows = []
        for record_id, values in zip(ids, pipe.execute(), strict=True):
            v = dict(zip(ROW_FIELDS, values, strict=True))
            if not v["status"]:
                continue

            def when(name: str, v: dict = v) -> datetime | None:
                return datetime.fromisoformat(v[name]) if v[name] else None

            rows.append(
                JobRow(
                    id=record_id,
                    status=v["status"],
                    queue=v["queue"],
                    created_at=when("created_at"),
                    started_at=when("started_at"),
                    finished_at=when("finished_at"),
                    worker=v["worker"] or None,
                    device=v["device"] or None,
                    kind=self.KIND,
                )
            )
        return rows

    # ------------------------------------------------------------ metrics
    def ended_counts(self) -> dict[tuple[str, str, str], int]:
        """Runs ended, every kind: (kind, outcome, queue) -> count."""
        out: dict[tuple[str, str, str], int] = {}
        for field_name, value in self.r.hgetall(METRIC_ENDED).items():
            kind, outcome, queue = field_name.split("|", 2)
            out[(kind, outcome, queue)] = int(value)
        return out

    def histograms(self, name: str) -> dict[tuple[str, ...], Histogram]:
        """A stored histogram (`run_seconds` or `queue_wait_seconds`), every kind, by labels."""
        key = {"run_seconds": METRIC_RUN_SECONDS, "queue_wait_seconds": METRIC_QUEUE_WAIT}[name]
        out: dict[tuple[str, ...], Histogram] = {}
        for field_name, value in self.r.hgetall(key).items():
            labels, le = field_name.rsplit("|", 1)
            h = out.setdefault(tuple(labels.split("|")), Histogram({}, 0.0))
            if le == "sum":
                h.sum = float(value)
            else:
                h.buckets[le] = int(value)
        return out

    # --------------------------------------------------------------- read
    def get(self, record_id: str) -> R | None:
        raw = self.r.hgetall(self.key(record_id))
        return self._decode(record_id, raw) if raw else None

    def status(self, record_id: str) -> JobStatus | None:
        value = self.r.hget(self.key(record_id), "status")
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
        key = self.INDEX
        filters = [self.label_key(k, v) for k, v in (labels or {}).items()]
        if status is not None:
            filters.append(self.status_key(status))
        if filters:
            self.prune()
            self.ensure_indexes()
            pipe = self.r.pipeline(transaction=False)
            for f in filters:
                pipe.zcard(f)
            key = min(zip(pipe.execute(), filters, strict=True))[1]
        start = 0
        if cursor:
            start = self._rank_after(key, cursor)
        items: list[R] = []
        chunk = max(limit * 4, 100) if len(filters) > 1 else limit
        last_seen: str | None = None
        while len(items) < limit:
            ids = self.r.zrevrange(key, start, start + chunk - 1)
            if not ids:
                return items, None
            pipe = self.r.pipeline(transaction=False)
            for record_id in ids:
                pipe.hgetall(self.key(record_id))
            for record_id, raw in zip(ids, pipe.execute(), strict=True):
                last_seen = record_id
                start += 1
                if not raw:  # expired since it was listed
                    continue
                record = self._decode(record_id, raw)
                if status is not None and record.status != status:
                    continue
                if labels and any(record.spec.labels.get(k) != v for k, v in labels.items()):
                    continue
                items.append(record)
                if len(items) == limit:
                    break
        more = self.r.zcard(key) > start
        return items, (last_seen if more else None)

    def _rank_after(self, key: str, cursor: str) -> int:
        """How many ids of `key` come before and at `cursor` in newest-first order. The cursor
        is placed by its creation time, so it may have changed status (or left the index)."""
        rank = self.r.zrevrank(key, cursor)
        if rank is not None:
            return rank + 1
        score = self.r.zscore(self.INDEX, cursor)
        if score is None:
            raise ValueError(f"cursor does not name a {self.KIND}")
        newer = self.r.zcount(key, f"({score}", "+inf")
        ties = self.r.zrangebyscore(key, score, score)
        return newer + sum(1 for t in ties if t > cursor)  # equal scores: reverse id order

    # ------------------------------------------------------------- update
    def set_fields(self, record_id: str, epoch: int | None = None, **fields: Any) -> bool:
        """Field-level HSET; with `epoch`, only while the record's epoch is that (a run's
        writes): False when refused."""
        encoded = {
            k: (v if isinstance(v, str | int | float) else json.dumps(v, default=str))
            for k, v in fields.items()
        }
        if epoch is None:
            self.r.hset(self.key(record_id), mapping=encoded)
            return True
        return self._fenced_hset(record_id, epoch, encoded)

    def _fenced_hset(self, record_id: str, epoch: int, fields: dict[str, Any]) -> bool:
        """HSET `fields` atomically, only while the record's epoch is `epoch` (Lua)."""
        args: list[Any] = [str(epoch)]
        for k, v in fields.items():
            args += [k, v]
        return bool(self.r.eval(FENCED_HSET, 1, self.key(record_id), *args))

    def epoch(self, record_id: str) -> tuple[JobStatus | None, int]:
        """The record's status and epoch (the fencing token its current run writes with)."""
        status, epoch = self.r.hmget(self.key(record_id), ["status", "epoch"])
        return (JobStatus(status) if status else None), int(epoch or 0)

    def request_cancel(self, record_id: str) -> R | None:
        """Flag a record for cancellation; a queued one is cancelled at once."""
        record = self.get(record_id)
        if record is None or record.status.terminal:
            return record
        self.r.hset(self.key(record_id), "cancel_requested", 1)
        if record.status == JobStatus.queued:
            self.finish(record_id, JobStatus.cancelled, only_if={JobStatus.queued})
        return self.get(record_id)

    def cancel_requested(self, record_id: str) -> bool:
        return self.r.hget(self.key(record_id), "cancel_requested") == "1"

    def acquire(self, record_id: str, worker: str, ttl_s: int) -> bool:
        """Take the per-record run lock; False if another live worker holds it."""
        return bool(self.r.set(self.lock_key(record_id), worker, nx=True, ex=ttl_s))

    def refresh_lock(self, record_id: str, worker: str, ttl_s: int) -> bool:
        """Extend `worker`'s lock on the record; False if it is no longer that worker's."""
        key = self.lock_key(record_id)
        if self.r.get(key) != worker:
            return False
        return bool(self.r.expire(key, ttl_s))

    def release(self, record_id: str, worker: str | None = None) -> None:
        """Drop the run lock (only `worker`'s own, when given)."""
        key = self.lock_key(record_id)
        if worker is None or self.r.get(key) == worker:
            self.r.delete(key)

    def lock_holder(self, record_id: str) -> str | None:
        return self.r.get(self.lock_key(record_id))

    def mark_running(self, record_id: str, worker: str, device: str, versions: dict) -> int:
        """Start a run whatever the record's status; returns its attempt number. Runs use
        `claim`, which also returns the run's epoch and starts only a queued record."""
        claimed = self._claim(record_id, worker, device, versions, queued_only=False)
        assert claimed is not None
        return claimed[0]

    def claim(
        self, record_id: str, worker: str, device: str, versions: dict
    ) -> tuple[int, int] | None:
        """Start a run of a queued record: (attempt, epoch), the epoch being the fencing token
        every write of the run carries; None when the record is not queued (cancelled or
        taken meanwhile)."""
        return self._claim(record_id, worker, device, versions, queued_only=True)

    def _claim(
        self, record_id: str, worker: str, device: str, versions: dict, queued_only: bool
    ) -> tuple[int, int] | None:
        key = self.key(record_id)
        with self.r.pipeline() as pipe:
            for _ in range(10):
                try:
                    pipe.watch(key)
                    status, created, queue = pipe.hmget(key, ["status", "created_at", "queue"])
                    if queued_only and status != JobStatus.queued.value:
                        pipe.unwatch()
                        return None
                    pipe.multi()
                    pipe.hincrby(key, "attempts", 1)
                    pipe.hincrby(key, "epoch", 1)
                    pipe.hset(
                        key,
                        mapping={
                            "status": JobStatus.running.value,
                            "started_at": now().isoformat(),
                            "worker": worker,
                            "device": device,
                            "versions": json.dumps(versions),
                        },
                    )
                    pipe.sadd(self.running_key(), record_id)
                    self._index(pipe, record_id, JobStatus.running, _ts(created), queue)
                    out = pipe.execute()
                    return int(out[0]), int(out[1])
                except redis.WatchError:
                    time.sleep(0.01)
        return None

    def running_ids(self) -> list[str]:
        """Ids of the records in status running (constant cost in the number of records)."""
        return sorted(self.r.smembers(self.running_key()))

    @staticmethod
    def _ended(raw: dict[str, str], outcome: str, at: datetime) -> str:
        """`attempt_log` with the current run appended as ended with `outcome`."""
        log = json.loads(raw.get("attempt_log") or "[]")
        log.append(
            {
                "attempt": int(raw.get("attempts") or 0),
                "worker": raw.get("worker") or None,
                "started_at": raw.get("started_at") or None,
                "ended_at": at.isoformat(),
                "outcome": outcome,
            }
        )
        return json.dumps(log)

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
        key, lock = self.key(record_id), self.lock_key(record_id)
        with self.r.pipeline() as pipe:
            for _ in range(10):
                try:
                    pipe.watch(key, lock)
                    raw = pipe.hgetall(key)
                    if not raw or raw.get("status") != JobStatus.running.value:
                        pipe.unwatch()
                        return None
                    if attempt is not None and int(raw.get("attempts") or 0) != attempt:
                        pipe.unwatch()
                        return None
                    if epoch is not None and int(raw.get("epoch") or 0) != epoch:
                        pipe.unwatch()
                        return None
                    if only_if_unlocked and pipe.exists(lock):
                        pipe.unwatch()
                        return None
                    at = now()
                    fields: dict[str, Any] = {
                        "attempt_log": self._ended(raw, outcome, at),
                        **self._restart_fields(raw),
                    }
                    attempts = int(raw.get("attempts") or 0)
                    if raw.get("cancel_requested") == "1":
                        status = JobStatus.cancelled
                    elif max_attempts is not None and attempts >= max_attempts:
                        status = JobStatus.failed
                        if error is not None:
                            fields["error"] = error.model_dump_json()
                    else:
                        status = JobStatus.queued
                    fields["status"] = status.value
                    if status.terminal:
                        fields["finished_at"] = at.isoformat()
                        self._expire_idem(pipe, raw, record_id)
                    pipe.multi()
                    pipe.hset(key, mapping=fields)
                    pipe.hincrby(key, "epoch", 1)
                    if not status.terminal:
                        pipe.hdel(key, "worker", "device", "started_at")
                    pipe.srem(self.running_key(), record_id)
                    created = _ts(raw.get("created_at"))
                    self._index(pipe, record_id, status, created, raw.get("queue"), at.timestamp())
                    if status.terminal:
                        self._observe_end(pipe, raw, status, at)
                    pipe.execute()
                    return status
                except redis.WatchError:
                    time.sleep(0.01)
        return None

    def restore_message(self, record_id: str) -> bool:
        """Put the record's unacknowledged broker message (its task id is the record id) back
        at the head of its queue, as kombu does after the visibility timeout, but now; False
        when no such message is held (then the caller sends a new one)."""
        found: str | None = None
        for tag, payload in self.r.hscan_iter(UNACKED):
            try:
                message = json.loads(payload)[0]
                if message.get("headers", {}).get("id") == record_id:
                    found = tag
                    break
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                continue
        if found is None:
            return False
        with self.r.pipeline() as pipe:
            try:
                pipe.watch(UNACKED)
                payload = pipe.hget(UNACKED, found)
                if payload is None:  # restored or acknowledged meanwhile
                    pipe.unwatch()
                    return True
                message, _exchange, routing_key = json.loads(payload)
                message.setdefault("headers", {})["redelivered"] = True
                message.get("properties", {}).get("delivery_info", {})["redelivered"] = True
                queue = routing_key or message.get("properties", {}).get("delivery_info", {}).get(
                    "routing_key"
                )
                pipe.multi()
                pipe.rpush(queue, json.dumps(message))  # consumers BRPOP: the head of the queue
                pipe.hdel(UNACKED, found)
                pipe.zrem(UNACKED_INDEX, found)
                pipe.execute()
                return True
            except redis.WatchError:
                return True  # someone else moved it

    def message_ids(self, queues: tuple[str, ...] | list[str]) -> set[str]:
        """The task ids (record ids) of the broker messages waiting in `queues` (every
        priority list of each) or delivered and not yet acknowledged: the records something
        will still run. Cost: the messages held; the sweeper (tasks.reaper) reads it seldom."""
        pipe = self.r.pipeline(transaction=False)
        for q in queues:
            for key in (q, *(f"{q}{KOMBU_PRIORITY_SEP}{p}" for p in KOMBU_PRIORITIES)):
                pipe.lrange(key, 0, -1)
        pipe.hvals(UNACKED)
        *lists, unacked = pipe.execute()
        ids: set[str] = set()
        for payload in [m for messages in lists for m in messages]:
            try:
                ids.add(json.loads(payload)["headers"]["id"])
            except (ValueError, KeyError, TypeError):
                continue
        for payload in unacked:
            try:
                ids.add(json.loads(payload)[0]["headers"]["id"])
            except (ValueError, KeyError, IndexError, TypeError):
                continue
        return ids

    def queued_ids(self, older_than_s: float, limit: int = 1_000) -> list[str]:
        """Ids of the oldest `limit` queued records created more than `older_than_s` ago."""
        cutoff = time.time() - older_than_s
        key = self.status_key(JobStatus.queued)
        return self.r.zrangebyscore(key, "-inf", cutoff, start=0, num=limit)

    def set_progress(
        self,
        record_id: str,
        name: str | int,
        progress: MeasureProgress,
        epoch: int | None = None,
    ) -> bool:
        """One measure's (a job) or one checkpoint's (a trajectory) progress; with `epoch`
        (a run's writes), only while the record is at that epoch: False when refused."""
        return self.set_fields(record_id, epoch, **{f"progress:{name}": progress.model_dump_json()})

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
        key = self.key(record_id)
        allowed = only_if or {JobStatus.queued, JobStatus.running}
        with self.r.pipeline() as pipe:
            for _ in range(10):
                try:
                    pipe.watch(key)
                    raw = pipe.hgetall(key)
                    current = raw.get("status")
                    if current is None or JobStatus(current) not in allowed:
                        pipe.unwatch()
                        return False
                    if attempt is not None and int(raw.get("attempts") or 0) != attempt:
                        pipe.unwatch()
                        return False
                    if epoch is not None and int(raw.get("epoch") or 0) != epoch:
                        pipe.unwatch()
                        return False
                    at = now()
                    fields: dict[str, Any] = {"status": status.value, "finished_at": at.isoformat()}
                    if current == JobStatus.running.value:
                        fields["attempt_log"] = self._ended(raw, status.value, at)
                    self._expire_idem(pipe, raw, record_id)
                    pipe.multi()
                    pipe.srem(self.running_key(), record_id)
                    created = _ts(raw.get("created_at"))
                    self._index(pipe, record_id, status, created, raw.get("queue"), at.timestamp())
                    self._observe_end(pipe, raw, status, at)
                    if results is not None:
                        fields["results"] = json.dumps(results, default=str)
                    if error is not None:
                        fields["error"] = error.model_dump_json()
                    if evaluation is not None:
                        fields["evaluation"] = json.dumps(evaluation, default=str)
                    pipe.hset(key, mapping=fields)
                    pipe.hincrby(key, "epoch", 1)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    time.sleep(0.01)
        return False


class JobStore(RecordStore[Job, JobSpec]):
    KIND = "job"
    INDEX = f"{PREFIX}jobs"
    IDEM = f"{PREFIX}idem:"

    def _initial_fields(self, spec: JobSpec) -> dict[str, Any]:
        return {f"progress:{m.name}": MeasureProgress().model_dump_json() for m in spec.measures}

    def _decode(self, record_id: str, raw: dict[str, str]) -> Job:
        results = json.loads(raw["results"]) if raw.get("results") else {}
        return Job(
            **self._common(record_id, raw),
            spec=JobSpec.model_validate_json(raw["spec"]),
            progress=self._progress(raw),
            results={k: MeasureResult.model_validate(v) for k, v in results.items()},
            evaluation=json.loads(raw["evaluation"]) if raw.get("evaluation") else None,
        )

    def list(
        self,
        status: JobStatus | None = None,
        labels: dict[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest first. The cursor is the id of the last job of the previous page."""
        return self.page(status, labels, limit, cursor)

    def rows(self, limit: int | None = None) -> list[JobRow]:
        """The newest `limit` jobs (all when None) as rows: one pipelined HMGET per job."""
        return self.rows_of(self.r.zrevrange(self.INDEX, 0, -1 if limit is None else limit - 1))

    # ------------------------------------------------------------ workers
    @staticmethod
    def _worker_key(hostname: str) -> str:
        return f"{PREFIX}workers:{hostname}"

    def heartbeat(self, hostname: str, device: str, ttl_s: int = 30, **info: str) -> None:
        """Write `hostname`'s heartbeat (device, last_seen and any `info` fields), expiring
        after `ttl_s`, and its time in the workers index."""
        key = self._worker_key(hostname)
        at = now()
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(key, mapping={"device": device, "last_seen": at.isoformat(), **info})
        pipe.expire(key, ttl_s)
        pipe.zadd(WORKERS, {hostname: at.timestamp()})
        pipe.execute()

    def worker_alive(self, hostname: str | None) -> bool:
        """Whether `hostname`'s heartbeat has not expired."""
        return bool(hostname) and bool(self.r.exists(self._worker_key(hostname)))

    def forget_worker(self, hostname: str) -> None:
        """A worker that stops cleanly leaves the list at once rather than when it expires."""
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(self._worker_key(hostname))
        pipe.zrem(WORKERS, hostname)
        pipe.execute()

    def worker_times(self) -> dict[str, float]:
        """Hostname -> last heartbeat (epoch seconds) of the workers seen in the last
        `WORKER_MEMORY_S` (forgotten ones excluded); older entries are dropped."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zremrangebyscore(WORKERS, "-inf", f"({time.time() - WORKER_MEMORY_S}")
        pipe.zrange(WORKERS, 0, -1, withscores=True)
        return {host: float(score) for host, score in pipe.execute()[1]}

    def workers(self) -> list[dict[str, str]]:
        """The workers whose heartbeat has not expired, by hostname (no SCAN of the keys)."""
        hosts = sorted(self.worker_times())
        pipe = self.r.pipeline(transaction=False)
        for host in hosts:
            pipe.hgetall(self._worker_key(host))
        return [
            {"hostname": host, **info}
            for host, info in zip(hosts, pipe.execute(), strict=True)
            if info
        ]

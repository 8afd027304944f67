"""Run records in Redis, shared by the gateway (creates, reads, cancels) and the worker.

Every Redis key of jobs, trajectories and workers is spelled in this module and in
tasks.trajectorystore; everything else goes through the stores' methods.

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
    running:{kind}      set of the ids of records in status running (the reaper's worklist)

Each record also keeps `attempt_log`, a JSON list with one entry per ended run (attempt,
worker, started_at, ended_at, outcome), and `attempts`, the number of runs started: a run
writes its end only while the record still counts its attempt, so a run declared lost cannot
overwrite the run that replaced it. Kombu's own `unacked` hash and queue lists are read here
too (`restore_message`), so a lost run's message goes back to its queue at once.

`RecordStore` holds what every kind of run shares (create with idempotency, read, list, the
cancel flag, the run lock, progress, the atomic never-leave-terminal `finish`); `JobStore`
adds the job record's shape, the worker heartbeats and the rows the ops views read.

Every update is a field-level HSET, so the gateway's cancel flag and the worker's progress
never overwrite each other. Records carry no expiry: they survive gateway restarts, and with
AOF on, Redis restarts.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import redis

from tasks import problem_types
from tasks.spec import Job, JobSpec, JobStatus, MeasureProgress, MeasureResult, Problem

PREFIX = "sharpness:"
# kombu's Redis transport: unacknowledged messages by delivery tag, and their times
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
IDEMPOTENCY_TTL_S = 86_400


def now() -> datetime:
    return datetime.now(UTC)


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

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(redis.Redis.from_url(url, decode_responses=True))

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
        pipe = self.r.pipeline()
        pipe.hset(self.key(record_id), mapping=fields)
        pipe.zadd(self.INDEX, {record_id: created_at.timestamp()})
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
        self.r.delete(self.key(record_id))
        self.r.zrem(self.INDEX, record_id)

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
        """Newest first. The cursor is the id of the last record of the previous page."""
        start = 0
        if cursor:
            rank = self.r.zrevrank(self.INDEX, cursor)
            if rank is None:
                raise ValueError(f"cursor does not name a {self.KIND}")
            start = rank + 1
        items: list[R] = []
        chunk = max(limit * 4, 100)
        last_seen: str | None = None
        while len(items) < limit:
            ids = self.r.zrevrange(self.INDEX, start, start + chunk - 1)
            if not ids:
                return items, None
            for record_id in ids:
                last_seen = record_id
                record = self.get(record_id)
                start += 1
                if record is None:
                    continue
                if status is not None and record.status != status:
                    continue
                if labels and any(record.spec.labels.get(k) != v for k, v in labels.items()):
                    continue
                items.append(record)
                if len(items) == limit:
                    break
        more = self.r.zcard(self.INDEX) > start
        return items, (last_seen if more else None)

    # ------------------------------------------------------------- update
    def set_fields(self, record_id: str, **fields: Any) -> None:
        encoded = {
            k: (v if isinstance(v, str | int | float) else json.dumps(v, default=str))
            for k, v in fields.items()
        }
        self.r.hset(self.key(record_id), mapping=encoded)

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
        """Start a run; returns its attempt number (what `finish(attempt=...)` checks)."""
        key = self.key(record_id)
        pipe = self.r.pipeline()
        pipe.hincrby(key, "attempts", 1)
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
        return int(pipe.execute()[0])

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
    ) -> JobStatus | None:
        """End the running attempt without a result: back to `queued` (its worker shut down,
        or was lost), or `cancelled` when a cancel was asked for, or `failed` with `error`
        once `max_attempts` runs were started. The worker, device, start time and progress
        of the ended run are dropped from the record; `attempt_log` keeps them.

        Atomic and guarded: nothing happens unless the record is still running (and, when
        given, still on `attempt`, and with `only_if_unlocked`, no worker holds its lock).
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
                    pipe.multi()
                    pipe.hset(key, mapping=fields)
                    if not status.terminal:
                        pipe.hdel(key, "worker", "device", "started_at")
                    pipe.srem(self.running_key(), record_id)
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

    def set_progress(self, record_id: str, name: str | int, progress: MeasureProgress) -> None:
        """One measure's (a job) or one checkpoint's (a trajectory) progress."""
        self.r.hset(self.key(record_id), f"progress:{name}", progress.model_dump_json())

    def finish(
        self,
        record_id: str,
        status: JobStatus,
        results: dict[str, Any] | None = None,
        error: Problem | None = None,
        evaluation: dict[str, Any] | None = None,
        only_if: set[JobStatus] | None = None,
        attempt: int | None = None,
    ) -> bool:
        """Move a record to a terminal state atomically; never leave a terminal state. With
        `attempt`, only while the record still counts that run (a run declared lost and
        replaced writes nothing)."""
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
                    at = now()
                    fields: dict[str, Any] = {"status": status.value, "finished_at": at.isoformat()}
                    if current == JobStatus.running.value:
                        fields["attempt_log"] = self._ended(raw, status.value, at)
                    pipe.multi()
                    pipe.srem(self.running_key(), record_id)
                    if results is not None:
                        fields["results"] = json.dumps(results, default=str)
                    if error is not None:
                        fields["error"] = error.model_dump_json()
                    if evaluation is not None:
                        fields["evaluation"] = json.dumps(evaluation, default=str)
                    pipe.hset(key, mapping=fields)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    time.sleep(0.01)
        return False


@dataclass
class JobRow:
    """The few fields of a job the ops views need, without its spec or results."""

    id: str
    status: str
    queue: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    device: str | None


ROW_FIELDS = ("status", "queue", "created_at", "started_at", "finished_at", "worker", "device")


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
        ids = self.r.zrevrange(self.INDEX, 0, -1 if limit is None else limit - 1)
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.key(job_id), ROW_FIELDS)
        rows = []
        for job_id, values in zip(ids, pipe.execute(), strict=True):
            v = dict(zip(ROW_FIELDS, values, strict=True))
            if not v["status"]:
                continue
            rows.append(
                JobRow(
                    id=job_id,
                    status=v["status"],
                    queue=v["queue"],
                    created_at=datetime.fromisoformat(v["created_at"]) if v["created_at"] else None,
                    started_at=datetime.fromisoformat(v["started_at"]) if v["started_at"] else None,
                    finished_at=(
                        datetime.fromisoformat(v["finished_at"]) if v["finished_at"] else None
                    ),
                    worker=v["worker"] or None,
                    device=v["device"] or None,
                )
            )
        return rows

    # ------------------------------------------------------------ workers
    @staticmethod
    def _worker_key(hostname: str) -> str:
        return f"{PREFIX}workers:{hostname}"

    def heartbeat(self, hostname: str, device: str, ttl_s: int = 30) -> None:
        key = self._worker_key(hostname)
        self.r.hset(key, mapping={"device": device, "last_seen": now().isoformat()})
        self.r.expire(key, ttl_s)

    def worker_alive(self, hostname: str | None) -> bool:
        """Whether `hostname`'s heartbeat has not expired."""
        return bool(hostname) and bool(self.r.exists(self._worker_key(hostname)))

    def forget_worker(self, hostname: str) -> None:
        """A worker that stops cleanly leaves the list at once rather than when it expires."""
        self.r.delete(self._worker_key(hostname))

    def workers(self) -> list[dict[str, str]]:
        out = []
        for key in self.r.scan_iter(self._worker_key("*")):
            info = self.r.hgetall(key)
            if info:
                out.append({"hostname": key.split(":", 2)[2], **info})
        return sorted(out, key=lambda w: w["hostname"])

"""A record's runs: claim, fenced writes, hand-back and end, each atomic inside Redis.

Every claim (`claim`), requeue, reap, hand-back (`end_run`) and end (`finish`, cancel
included) increments the record's `epoch` in the transaction that changes its status. A run
writes only with the epoch its claim returned, and every such write (its progress, its partial
results, its end) is a compare-and-set on (record, epoch) inside Redis (a Lua script or
WATCH/MULTI): a run that lost its lease (paused, reaped, requeued, replaced) can write nothing
at all, even while the record is `queued` again with the same `attempts`. Each ended run is
appended to `attempt_log` (attempt, worker, started_at, ended_at, outcome); a record never
leaves a terminal status."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from tasks.contract.spec import JobStatus, Problem
from tasks.store.codec import RecordCodec, encode_value, now, timestamp
from tasks.store.connection import hash_fields, text, text_hash
from tasks.store.idempotency import IdempotencyKeys
from tasks.store.indexes import StatusIndexes
from tasks.store.keys import RecordKeys, lock_key
from tasks.store.metrics import RunMetrics
from tasks.store.retention import Retention

WATCH_TRIES = 10  # a transaction whose record changed meanwhile is retried this often

# HSET the field/value pairs ARGV[2..] on KEYS[1] only while its epoch is ARGV[1]; 1 if written
FENCED_HSET = """
local epoch = redis.call('HGET', KEYS[1], 'epoch') or '0'
if epoch ~= ARGV[1] or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""


@dataclass(frozen=True)
class Guard:
    """What a transition requires of the record: still on `attempt`, still at `epoch`."""

    attempt: int | None = None
    epoch: int | None = None

    def holds(self, raw: dict[str, str]) -> bool:
        if self.attempt is not None and int(raw.get("attempts") or 0) != self.attempt:
            return False
        return self.epoch is None or int(raw.get("epoch") or 0) == self.epoch


@dataclass
class Lifecycle:
    """The transitions of one kind of record; the store's collaborators do the bookkeeping."""

    r: redis.Redis
    keys: RecordKeys
    codec: RecordCodec
    indexes: StatusIndexes
    retention: Retention
    metrics: RunMetrics
    idempotency: IdempotencyKeys
    restart_fields: Callable[[dict[str, str]], dict[str, Any]]

    # ------------------------------------------------------------ writes
    def set_fields(self, record_id: str, epoch: int | None, fields: dict[str, Any]) -> bool:
        """Field-level HSET; with `epoch`, only while the record's epoch is that (a run's
        writes): False when refused."""
        encoded = {k: encode_value(v) for k, v in fields.items()}
        if epoch is None:
            self.r.hset(self.keys.record(record_id), mapping=hash_fields(encoded))
            return True
        args: list[Any] = [str(epoch)]
        for k, v in encoded.items():
            args += [k, v]
        return bool(self.r.eval(FENCED_HSET, 1, self.keys.record(record_id), *args))

    def epoch(self, record_id: str) -> tuple[JobStatus | None, int]:
        """The record's status and epoch (the fencing token its current run writes with)."""
        status, epoch = map(text, self.r.hmget(self.keys.record(record_id), ["status", "epoch"]))
        return (JobStatus(status) if status else None), int(epoch or 0)

    # ------------------------------------------------------------- claim
    def claim(
        self, record_id: str, worker: str, device: str, versions: dict, queued_only: bool
    ) -> tuple[int, int] | None:
        """Start a run: (attempt, epoch); None when `queued_only` and the record is not
        queued (cancelled or taken meanwhile)."""
        key = self.keys.record(record_id)
        with self.r.pipeline() as pipe:
            for _ in range(WATCH_TRIES):
                try:
                    pipe.watch(key)
                    status, created, queue = map(
                        text, pipe.hmget(key, ["status", "created_at", "queue"])
                    )
                    if queued_only and status != JobStatus.queued.value:
                        pipe.unwatch()
                        return None
                    pipe.multi()
                    pipe.hincrby(key, "attempts", 1)
                    pipe.hincrby(key, "epoch", 1)
                    started = self.codec.encode(
                        status=JobStatus.running,
                        started_at=now(),
                        worker=worker,
                        device=device,
                        versions=versions,
                    )
                    pipe.hset(key, mapping=hash_fields(started))
                    pipe.sadd(self.keys.running(), record_id)
                    self.indexes.move(pipe, record_id, JobStatus.running, timestamp(created), queue)
                    out = pipe.execute()
                    return int(out[0]), int(out[1])
                except redis.WatchError:
                    time.sleep(0.01)
        return None

    # --------------------------------------------------------------- end
    def _attempt_log(self, raw: dict[str, str], outcome: str, at: datetime) -> str:
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
        return self.codec.encode(attempt_history=log)["attempt_log"]

    def _ended(
        self,
        pipe: Any,
        record_id: str,
        raw: dict[str, str],
        status: JobStatus,
        at: datetime,
        observe: bool,
    ) -> None:
        """Queue onto `pipe` (a MULTI) what every end of a run shares: out of the running set,
        the index moves with their expiry, and with `observe`, the metrics of the run."""
        pipe.srem(self.keys.running(), record_id)
        created = timestamp(raw.get("created_at"))
        self.indexes.move(pipe, record_id, status, created, raw.get("queue"), at.timestamp())
        if observe:
            self.metrics.observe_end(pipe, raw, status, at)

    def _next_status(
        self, raw: dict[str, str], max_attempts: int | None, error: Problem | None
    ) -> tuple[JobStatus, dict[str, Any]]:
        """Where a run ended without a result leaves its record, and the fields that says."""
        attempts = int(raw.get("attempts") or 0)
        if raw.get("cancel_requested") == "1":
            return JobStatus.cancelled, {}
        if max_attempts is not None and attempts >= max_attempts:
            return JobStatus.failed, ({"error": error} if error is not None else {})
        return JobStatus.queued, {}

    @staticmethod
    def _may_end(pipe: Any, raw: dict[str, str], guard: Guard, lock: str | None) -> bool:
        """Whether the run may be ended: the record is running, the guard holds, and (when
        `lock` is given) no worker holds that lock."""
        if not raw or raw.get("status") != JobStatus.running.value or not guard.holds(raw):
            return False
        return lock is None or not pipe.exists(lock)

    def end_run(
        self,
        record_id: str,
        outcome: str,
        guard: Guard,
        only_if_unlocked: bool,
        max_attempts: int | None,
        error: Problem | None,
    ) -> JobStatus | None:
        """End the running attempt without a result (see `RecordStore.end_run`)."""
        key, lock = self.keys.record(record_id), lock_key(record_id)
        with self.r.pipeline() as pipe:
            for _ in range(WATCH_TRIES):
                try:
                    pipe.watch(key, lock)
                    raw = text_hash(pipe.hgetall(key))
                    if not self._may_end(pipe, raw, guard, lock if only_if_unlocked else None):
                        pipe.unwatch()
                        return None
                    at = now()
                    status, values = self._next_status(raw, max_attempts, error)
                    fields: dict[str, Any] = {
                        "attempt_log": self._attempt_log(raw, outcome, at),
                        **self.restart_fields(raw),
                        **self.codec.encode(**values, status=status),
                    }
                    if status.terminal:
                        fields.update(self.codec.encode(finished_at=at))
                        self.retention.expire_idem(pipe, self.idempotency, raw, record_id)
                    pipe.multi()
                    pipe.hset(key, mapping=hash_fields(fields))
                    pipe.hincrby(key, "epoch", 1)
                    if not status.terminal:
                        pipe.hdel(key, "worker", "device", "started_at")
                    self._ended(pipe, record_id, raw, status, at, status.terminal)
                    pipe.execute()
                    return status
                except redis.WatchError:
                    time.sleep(0.01)
        return None

    def finish(
        self,
        record_id: str,
        status: JobStatus,
        outputs: dict[str, Any],
        allowed: set[JobStatus],
        guard: Guard,
    ) -> bool:
        """Move a record to a terminal state atomically (see `RecordStore.finish`); `outputs`:
        the results, error and evaluation given (by attribute)."""
        key = self.keys.record(record_id)
        with self.r.pipeline() as pipe:
            for _ in range(WATCH_TRIES):
                try:
                    pipe.watch(key)
                    raw = text_hash(pipe.hgetall(key))
                    current = raw.get("status")
                    if current is None or JobStatus(current) not in allowed or not guard.holds(raw):
                        pipe.unwatch()
                        return False
                    at = now()
                    fields = self.codec.encode(status=status, finished_at=at)
                    if current == JobStatus.running.value:
                        fields["attempt_log"] = self._attempt_log(raw, status.value, at)
                    self.retention.expire_idem(pipe, self.idempotency, raw, record_id)
                    pipe.multi()
                    self._ended(pipe, record_id, raw, status, at, observe=True)
                    fields.update(self.codec.encode(**outputs))
                    pipe.hset(key, mapping=hash_fields(fields))
                    pipe.hincrby(key, "epoch", 1)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    time.sleep(0.01)
        return False

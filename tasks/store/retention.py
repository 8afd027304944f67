"""How long ended records are kept, and which are due to go.

When a record ends, its hash (and its enqueue claim and Idempotency-Key, when they would
outlive it) expire `seconds` later (SHARPNESS_RETENTION_DAYS unless a store is given its own);
queued and running records carry no expiry. The `{index}:ended` sorted set scores each ended id
by the time it expires, so a prune finds the due ones by score (tasks.store.indexes drops
them), and a record is listed exactly as long as it can be read."""

from __future__ import annotations

import time
from typing import Any

import redis

from tasks.store.idempotency import IDEMPOTENCY_TTL_S, IdempotencyKeys
from tasks.store.keys import RecordKeys, enqueued_key

PRUNE_BATCH = 1_000


class Retention:
    """The retention of one store: its length, the expiries an end sets, the ids due."""

    def __init__(self, client: redis.Redis, keys: RecordKeys, seconds: float) -> None:
        self.r = client
        self.keys = keys
        self.seconds = seconds

    def ms(self) -> int:
        """The retention in milliseconds (at least 1: PEXPIRE 0 would delete at once)."""
        return max(1, int(self.seconds * 1000))

    def outlives_idempotency(self) -> bool:
        """Whether an ended record outlives its Idempotency-Key and enqueue claim (24 h)."""
        return self.seconds >= IDEMPOTENCY_TTL_S

    def expire_ended(self, pipe: Any, record_id: str, finished: float | None) -> None:
        """Queue onto `pipe` the expiry of a record that just ended (at `finished`, epoch
        seconds; now when None): its hash, its enqueue claim, and its place in `ended`."""
        expires = (finished or time.time()) + self.seconds
        pipe.zadd(self.keys.ended(), {record_id: expires})
        pipe.pexpire(self.keys.record(record_id), self.ms())
        if not self.outlives_idempotency():
            pipe.pexpire(enqueued_key(record_id), self.ms())

    def keep(self, pipe: Any, record_id: str) -> None:
        """Queue onto `pipe` the end of a record's expiry: it is live again."""
        pipe.zrem(self.keys.ended(), record_id)
        pipe.persist(self.keys.record(record_id))

    def expire_idem(
        self, pipe: Any, idem: IdempotencyKeys, raw: dict[str, str], record_id: str
    ) -> None:
        """With a retention under a day, the record's Idempotency-Key (while it still names
        this record) ends with it. Call before `pipe.multi()`: it reads the key."""
        stored = raw.get("idem")
        if stored and not self.outlives_idempotency():
            idem.expire_with(pipe, stored, record_id, self.ms())

    def left_ms(self, ttl_ms: int, ended: float) -> int:
        """What is left of an ended record's retention when its indexes are rebuilt: an expiry
        set by the process that ended it stands (its own retention); none yet (`ttl_ms` < 0):
        it counts from the end (`ended`, epoch seconds), not from now."""
        left = ttl_ms if ttl_ms > 0 else int((ended + self.seconds - time.time()) * 1000)
        return max(1, left)

    def due(self, limit: int = PRUNE_BATCH) -> list[str]:
        """The ended ids whose retention is over, oldest first, at most `limit`."""
        ids = self.r.zrangebyscore(self.keys.ended(), "-inf", time.time(), start=0, num=limit)
        return [str(i) for i in ids]

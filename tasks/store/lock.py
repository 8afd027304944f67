"""The per-record run lock: the one worker running a record holds it (SET NX with expiry).

The lock says who runs a record now; the record's epoch (tasks.store.records) fences what a run
may write. A keeper thread refreshes the lock while the run computes."""

from __future__ import annotations

import redis

from tasks.store.keys import lock_key


class RunLock:
    """Take, refresh, drop and read the run lock of records."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def acquire(self, record_id: str, worker: str, ttl_s: int) -> bool:
        """Take the record's lock; False if another live worker holds it."""
        return bool(self.r.set(lock_key(record_id), worker, nx=True, ex=ttl_s))

    def refresh(self, record_id: str, worker: str, ttl_s: int) -> bool:
        """Extend `worker`'s lock on the record; False if it is no longer that worker's."""
        key = lock_key(record_id)
        if self.r.get(key) != worker:
            return False
        return bool(self.r.expire(key, ttl_s))

    def release(self, record_id: str, worker: str | None = None) -> None:
        """Drop the lock (only `worker`'s own, when given)."""
        key = lock_key(record_id)
        if worker is None or self.r.get(key) == worker:
            self.r.delete(key)

    def holder(self, record_id: str) -> str | None:
        """The worker holding the record's lock, if any."""
        value = self.r.get(lock_key(record_id))
        return str(value) if value is not None else None

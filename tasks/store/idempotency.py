"""Idempotency-Key records: the id a create made under a client's key, kept 24 hours, so a
retried request returns what the first one made instead of making it again.

Run records (tasks.store.records) and studies (service.studies.store) keep their keys here;
runs also claim the sending of their one Celery message (`claim_enqueue`), so racing resubmits
enqueue a record once."""

from __future__ import annotations

from typing import Any

import redis

from tasks.store.keys import enqueued_key

IDEMPOTENCY_TTL_S = 86_400


class IdempotencyKeys:
    """The Idempotency-Key -> id records under one key prefix."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int = IDEMPOTENCY_TTL_S) -> None:
        self.r = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def key(self, idempotency_key: str) -> str:
        """The Redis key of a client's Idempotency-Key."""
        return f"{self.prefix}{idempotency_key}"

    def holder(self, idempotency_key: str) -> str | None:
        """The id made under the key, if it is still held."""
        value = self.r.get(self.key(idempotency_key))
        return str(value) if value else None

    def claim(self, idempotency_key: str, made_id: str) -> bool:
        """Name `made_id` under the key unless an earlier create holds it (False then)."""
        return bool(self.r.set(self.key(idempotency_key), made_id, ex=self.ttl_s, nx=True))

    def claim_in(self, pipe: Any, idempotency_key: str, made_id: str) -> None:
        """`claim`, queued onto `pipe` with the writes of what it made; the caller reads the
        winner (`holder`) after the pipeline ran."""
        pipe.set(self.key(idempotency_key), made_id, ex=self.ttl_s, nx=True)

    def release(self, idempotency_key: str, made_id: str) -> None:
        """Free the key, if it still names `made_id` (what it made was not kept)."""
        key = self.key(idempotency_key)
        if self.r.get(key) == made_id:
            self.r.delete(key)

    def expire_with(self, pipe: Any, key: str, made_id: str, ms: int) -> None:
        """Queue onto `pipe` an expiry of `ms` for the stored key `key`, while it names
        `made_id` (what it made ends sooner than the key would). Reads the key: call before
        `pipe.multi()`."""
        if self.r.get(key) == made_id:
            pipe.pexpire(key, ms)

    def claim_enqueue(self, record_id: str) -> bool:
        """Claim the sending of the record's one message; False if it was claimed before."""
        return bool(self.r.set(enqueued_key(record_id), 1, nx=True, ex=self.ttl_s))

    def release_enqueue(self, record_id: str) -> None:
        """Drop the record's enqueue claim (its message could not be sent)."""
        self.r.delete(enqueued_key(record_id))

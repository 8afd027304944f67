"""Who owns each record and who holds each upload, beside the records themselves.

A record (job, trajectory, study) has one owner, the tenant that made it; a content-addressed
upload has holders, every tenant that uploaded its bytes, so one file on disk serves several
tenants while each sees only what it uploaded and pays for it in its storage quota. Kept in
their own keys (tasks.store.keys.OwnerKeys) so the records' stored forms are unchanged: a
record written before tenants existed has no owner, and only the roles that read everything
see it. Records written without an owner read as None.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from tasks.store.connection import texts
from tasks.store.keys import OWNERS, OwnerKeys


class Owners:
    """Owners of records and holders of uploads, on one Redis connection."""

    def __init__(self, client: redis.Redis, keys: OwnerKeys = OWNERS) -> None:
        self.r = client
        self.keys = keys

    # -------------------------------------------------------------- records
    def claim(self, kind: str, record_id: str, tenant: str, created: float | None = None) -> None:
        """Record `tenant` as the owner of a new record."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.keys.owners(kind), record_id, tenant)
        pipe.zadd(self.keys.owned(kind, tenant), {record_id: created or time.time()})
        pipe.execute()

    def owner(self, kind: str, record_id: str) -> str | None:
        value = self.r.hget(self.keys.owners(kind), record_id)
        return value.decode() if isinstance(value, bytes) else value

    def forget(self, kind: str, record_id: str, deleted_by: str) -> None:
        """Drop a deleted record's ownership, noting who deleted it and when."""
        tenant = self.owner(kind, record_id)
        note = {"deleted_by": deleted_by, "deleted_at": time.time(), "owner": tenant}
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(self.keys.owners(kind), record_id)
        pipe.hset(self.keys.deleted(kind), record_id, json.dumps(note))
        if tenant:
            pipe.zrem(self.keys.owned(kind, tenant), record_id)
        pipe.execute()

    def drop_gone(self, kind: str, tenant: str, record_ids: list[str]) -> None:
        """Forget records that expired (their retention ended) from the tenant's index."""
        if record_ids:
            pipe = self.r.pipeline(transaction=True)
            pipe.zrem(self.keys.owned(kind, tenant), *record_ids)
            pipe.hdel(self.keys.owners(kind), *record_ids)
            pipe.execute()

    def owned_ids(self, kind: str, tenant: str, start: int, count: int) -> list[str]:
        """A tenant's record ids, newest first, from rank `start`."""
        return texts(self.r.zrevrange(self.keys.owned(kind, tenant), start, start + count - 1))

    def rank_after(self, kind: str, tenant: str, record_id: str) -> int | None:
        """How many of the tenant's ids come before and at `record_id`, newest first."""
        rank = self.r.zrevrank(self.keys.owned(kind, tenant), record_id)
        return rank + 1 if isinstance(rank, int) else None

    def count_owned(self, kind: str, tenant: str) -> int:
        return int(self.r.zcard(self.keys.owned(kind, tenant)))

    # ---------------------------------------------------------------- blobs
    def hold(self, kind: str, blob_id: str, tenant: str, size: int, **seen: Any) -> bool:
        """`tenant` holds the upload, as it `seen` it (its filename, when); False when it held
        it already (a second upload of the same bytes by one tenant costs nothing more)."""
        entry = json.dumps({"size": size, **seen}, default=str)
        if not self.r.hsetnx(self.keys.holders(kind, blob_id), tenant, entry):
            return False
        pipe = self.r.pipeline(transaction=True)
        pipe.zadd(self.keys.owned(kind, tenant), {blob_id: time.time()})
        pipe.hincrby(self.keys.storage(), tenant, size)
        pipe.execute()
        return True

    def holding(self, kind: str, blob_id: str, tenant: str) -> dict[str, Any] | None:
        """What the tenant's hold records (size, filename, created_at), None when it holds none."""
        value = self.r.hget(self.keys.holders(kind, blob_id), tenant)
        return json.loads(value) if value else None

    def release(self, kind: str, blob_id: str, tenant: str) -> int:
        """Drop the tenant's hold; returns how many holders are left."""
        held = self.holding(kind, blob_id, tenant)
        if held is not None and self.r.hdel(self.keys.holders(kind, blob_id), tenant):
            pipe = self.r.pipeline(transaction=True)
            pipe.zrem(self.keys.owned(kind, tenant), blob_id)
            pipe.hincrby(self.keys.storage(), tenant, -int(held.get("size", 0)))
            pipe.execute()
        return int(self.r.hlen(self.keys.holders(kind, blob_id)))

    def forget_blob(self, kind: str, blob_id: str) -> None:
        """Drop every hold of a blob deleted outright (an admin's delete)."""
        holders = self.r.hgetall(self.keys.holders(kind, blob_id))
        for tenant in holders:
            self.release(kind, blob_id, str(tenant))

    def holds(self, kind: str, blob_id: str, tenant: str) -> bool:
        return bool(self.r.hexists(self.keys.holders(kind, blob_id), tenant))

    def holder_count(self, kind: str, blob_id: str) -> int:
        return int(self.r.hlen(self.keys.holders(kind, blob_id)))

    def held(self, kind: str, tenant: str) -> set[str]:
        return set(texts(self.r.zrange(self.keys.owned(kind, tenant), 0, -1)))

    def storage_bytes(self, tenant: str) -> int:
        value = self.r.hget(self.keys.storage(), tenant)
        return int(value) if value else 0

    def deletion(self, kind: str, record_id: str) -> dict[str, object] | None:
        """Who deleted a record and when, if it was deleted through the gateway."""
        value = self.r.hget(self.keys.deleted(kind), record_id)
        return json.loads(value) if value else None

    def count_within(self, kind: str, tenant: str, index: str) -> int:
        """How many of the tenant's records of `kind` are in the sorted set `index` (a status
        index): an intersection into a scratch key, written and dropped in one MULTI."""
        owned = self.keys.owned(kind, tenant)
        scratch = f"{owned}:scratch"
        pipe = self.r.pipeline(transaction=True)
        pipe.zinterstore(scratch, [owned, index], aggregate="MIN")
        pipe.delete(scratch)
        return int(pipe.execute()[0])

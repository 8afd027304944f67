"""Listing records newest first, page by page, optionally filtered by status and labels.

A filtered page walks the smallest of its filters' indexes (tasks.store.indexes: the status'
and each label pair's) and reads only its records, keeping those that match the other filters:
the cost follows the records that carry the rarest filter, not the whole store. The cursor is
the id of the last record of the previous page, placed by its creation time, so it may have
changed status (or left the index) since."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import redis

from tasks.contract.spec import JobStatus
from tasks.store.connection import text_hash, texts
from tasks.store.keys import RecordKeys

R = TypeVar("R")


def _matches(record: Any, status: JobStatus | None, labels: dict[str, str]) -> bool:
    if status is not None and record.status != status:
        return False
    return not any(record.spec.labels.get(k) != v for k, v in labels.items())


class Pager(Generic[R]):
    """Pages of one kind of record, decoded by `decode` (the store's)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: RecordKeys,
        decode: Callable[[str, dict[str, str]], R],
    ) -> None:
        self.r = client
        self.keys = keys
        self.decode = decode

    def _walked(self, status: JobStatus | None, labels: dict[str, str]) -> tuple[str, int]:
        """The index a page walks (the smallest of its filters') and how many filters it has."""
        filters = [self.keys.label(k, v) for k, v in labels.items()]
        if status is not None:
            filters.append(self.keys.status(status))
        if not filters:
            return self.keys.index, 0
        pipe = self.r.pipeline(transaction=False)
        for f in filters:
            pipe.zcard(f)
        return min(zip(pipe.execute(), filters, strict=True))[1], len(filters)

    def page(
        self,
        status: JobStatus | None,
        labels: dict[str, str],
        limit: int,
        cursor: str | None,
    ) -> tuple[list[R], str | None]:
        """Newest first, at most `limit`; the cursor of the next page (None at the end)."""
        key, n_filters = self._walked(status, labels)
        start = self._rank_after(key, cursor) if cursor else 0
        items: list[R] = []
        chunk = max(limit * 4, 100) if n_filters > 1 else limit
        last_seen: str | None = None
        while len(items) < limit:
            ids = texts(self.r.zrevrange(key, start, start + chunk - 1))
            if not ids:
                return items, None
            pipe = self.r.pipeline(transaction=False)
            for record_id in ids:
                pipe.hgetall(self.keys.record(record_id))
            for record_id, raw in zip(ids, pipe.execute(), strict=True):
                last_seen = record_id
                start += 1
                if not raw:  # expired since it was listed
                    continue
                record = self.decode(record_id, text_hash(raw))
                if not _matches(record, status, labels):
                    continue
                items.append(record)
                if len(items) == limit:
                    break
        more = self.r.zcard(key) > start
        return items, (last_seen if more else None)

    def _rank_after(self, key: str, cursor: str) -> int:
        """How many ids of `key` come before and at `cursor` in newest-first order."""
        rank = self.r.zrevrank(key, cursor)
        if isinstance(rank, int):
            return rank + 1
        score = self.r.zscore(self.keys.index, cursor)
        if score is None:
            raise ValueError(f"cursor does not name a {self.keys.kind}")
        newer = self.r.zcount(key, f"({score}", "+inf")
        ties = texts(self.r.zrangebyscore(key, score, score))
        return newer + sum(1 for t in ties if t > cursor)  # equal scores: reverse id order

    def queued_ids(self, older_than_s: float, limit: int = 1_000) -> list[str]:
        """Ids of the oldest `limit` queued records created more than `older_than_s` ago."""
        cutoff = time.time() - older_than_s
        key = self.keys.status(JobStatus.queued)
        return texts(self.r.zrangebyscore(key, "-inf", cutoff, start=0, num=limit))

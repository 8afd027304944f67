"""A run's connection to its record in Redis, which never holds the computation up.

While Redis is away the run keeps computing: its progress is kept (the latest per measure)
and written when Redis is back, a cancel check reads "not cancelled yet", and the writes that
must happen (the run's end, a hand-back) are retried with backoff until a deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import redis

from tasks.contract.spec import MeasureProgress
from tasks.store.records import RecordStore

log = logging.getLogger(__name__)

# after a failed call, a run leaves Redis alone this long (it keeps computing), doubling
# while Redis stays away (a partition where each try waits out its timeouts), up to AWAY_MAX_S
AWAY_S = 1.0
AWAY_MAX_S = 4.0
# what a Redis outage raises (BusyLoadingError, a restart reading its AOF, included)
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)


class Away(Exception):
    """Redis did not answer the run (or did not a moment ago): nothing was written."""


class StoreLink:
    """A run's own connection to its record, which never holds the computation up: a client
    that gives up within a fraction of a second, and after a failure no new call for `AWAY_S`
    (doubling while Redis stays away, up to `AWAY_MAX_S`; calls raise Away meanwhile). The
    progress the run could not write is kept, the latest per measure (bounded by the
    measures), and written first at the next call that reaches Redis."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store.quick()
        self.away_until = 0.0
        self.failures = 0  # calls failed in a row
        self.pending: dict[str, MeasureProgress] = {}
        self._lock = threading.Lock()

    def away(self) -> bool:
        return time.monotonic() < self.away_until

    def close(self) -> None:
        """Close the link's own connections (the run ended)."""
        self.store.r.connection_pool.disconnect()

    def call(self, fn: Callable[[RecordStore], Any]) -> Any:
        if self.away():
            raise Away()
        try:
            out = fn(self.store)
        except REDIS_ERRORS as e:
            if not self.failures:
                log.warning("Redis away (%s); the run goes on and writes later", e)
            self.away_until = time.monotonic() + min(AWAY_S * 2**self.failures, AWAY_MAX_S)
            self.failures += 1
            raise Away() from e
        if self.failures:
            log.warning("Redis is back after %d failed calls; the run writes again", self.failures)
            self.failures = 0
        return out

    def progress(self, rid: str, epoch: int, name: str, progress: MeasureProgress) -> bool:
        """Keep `progress` as the latest of `name` and write what is kept, fenced by `epoch`;
        False when the record is no longer at `epoch` (the run lost its lease)."""
        with self._lock:
            self.pending[name] = progress
        return self.flush(rid, epoch)

    def flush(self, rid: str, epoch: int) -> bool:
        """Write the kept progress (raises nothing: kept again when Redis is away)."""
        with self._lock:
            pending, self.pending = self.pending, {}
        try:
            for name, p in list(pending.items()):
                if not self.call(partial(_set_progress, rid=rid, name=name, p=p, epoch=epoch)):
                    return False
                del pending[name]
        except Away:
            with self._lock:
                self.pending = {**pending, **self.pending}  # newer entries win
        return True

    def cancel_requested(self, rid: str) -> bool:
        """A cancel check that cannot reach Redis means "not cancelled yet"."""
        try:
            return bool(self.call(lambda st: st.cancel_requested(rid)))
        except Away:
            return False


def retry_redis(fn: Callable[[], Any], deadline: float, what: str = "its write") -> Any:
    """`fn()`, retried with backoff (0.5 s doubling to 10 s) while Redis is away, until
    `deadline`; then the Redis error is raised."""
    delay = 0.5
    while True:
        try:
            return fn()
        except REDIS_ERRORS as e:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Redis away (%s); retrying %s in %.1f s", e, what, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _set_progress(st: RecordStore, rid: str, name: str, p: MeasureProgress, epoch: int) -> bool:
    return bool(st.set_progress(rid, name, p, epoch))

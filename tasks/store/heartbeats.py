"""Workers' heartbeats: a hash per worker that expires when it stops beating, and an index of
hostnames by their last beat, so the workers list never SCANs the keys."""

from __future__ import annotations

import time

import redis

from tasks.store.codec import now
from tasks.store.connection import hash_fields, text_hash
from tasks.store.keys import WORKERS, worker_key

WORKER_MEMORY_S = 600  # a worker whose heartbeat stopped is reported down this long


class Heartbeats:
    """Write, read and forget the workers' heartbeats."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def beat(self, hostname: str, device: str, ttl_s: int = 30, **info: str) -> None:
        """Write `hostname`'s heartbeat (device, last_seen and any `info` fields), expiring
        after `ttl_s`, and its time in the workers index."""
        key = worker_key(hostname)
        at = now()
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(key, mapping=hash_fields({"device": device, "last_seen": at.isoformat(), **info}))
        pipe.expire(key, ttl_s)
        pipe.zadd(WORKERS, {hostname: at.timestamp()})
        pipe.execute()

    def alive(self, hostname: str | None) -> bool:
        """Whether `hostname`'s heartbeat has not expired."""
        return bool(hostname) and bool(self.r.exists(worker_key(hostname or "")))

    def forget(self, hostname: str) -> None:
        """A worker that stops cleanly leaves the list at once rather than when it expires."""
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(worker_key(hostname))
        pipe.zrem(WORKERS, hostname)
        pipe.execute()

    def times(self) -> dict[str, float]:
        """Hostname -> last heartbeat (epoch seconds) of the workers seen in the last
        `WORKER_MEMORY_S` (forgotten ones excluded); older entries are dropped."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zremrangebyscore(WORKERS, "-inf", f"({time.time() - WORKER_MEMORY_S}")
        pipe.zrange(WORKERS, 0, -1, withscores=True)
        return {host: float(score) for host, score in pipe.execute()[1]}

    def workers(self) -> list[dict[str, str]]:
        """The workers whose heartbeat has not expired, by hostname (no SCAN of the keys)."""
        hosts = sorted(self.times())
        pipe = self.r.pipeline(transaction=False)
        for host in hosts:
            pipe.hgetall(worker_key(host))
        return [
            {"hostname": host, **text_hash(info)}
            for host, info in zip(hosts, pipe.execute(), strict=True)
            if info
        ]

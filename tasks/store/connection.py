"""Redis clients for the stores: one that waits out a short outage, one that gives up fast."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

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


# Replies as the stores read them. Their clients decode responses (`decode_responses=True`),
# so a reply is already text; these say so to the type checker, and decode a byte reply should
# a client be built without decoding.


def text(value: Any) -> str | None:
    """One reply as text (None stays None)."""
    if value is None or isinstance(value, str):
        return value
    return value.decode() if isinstance(value, bytes) else str(value)


def texts(values: Iterable[Any]) -> list[str]:
    """A list reply (ids, members) as text."""
    return [str(text(v)) for v in values]


def text_hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A hash reply (HGETALL) as text."""
    return {str(text(k)): str(text(v)) for k, v in raw.items()}


def hash_fields(fields: Mapping[str, Any]) -> dict[FieldT, EncodableT]:
    """Fields to write with HSET, as redis-py's signature spells them."""
    return {k: v for k, v in fields.items()}

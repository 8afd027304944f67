"""When to retry a request and how long to wait first.

Exponential backoff with full jitter (a uniform draw in [0, base·2^attempt], capped) spreads
clients that failed together so they do not return together. A server's `Retry-After`
(seconds or an HTTP date) wins over the draw: it knows when it will be ready.

Only a request that is safe to send twice is retried: GET and DELETE, and a POST the service
makes once whatever the number of times it arrives (one carrying an `Idempotency-Key`, an
upload stored by content, a cancel). A POST without that guarantee is sent once: its answer
lost, a retry could make a second record.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    # A Retry-After beyond this is not waited for in full (a client call must end).
    max_retry_after: float = 60.0

    def should_retry(
        self, attempt: int, response: httpx.Response | None, *, repeatable: bool = True
    ) -> bool:
        """`attempt` counts retries already made; response None means a transport error.
        `repeatable` False (a POST without an idempotency key) is never retried."""
        if not repeatable or attempt >= self.max_retries:
            return False
        return response is None or response.status_code in RETRY_STATUSES

    def delay(self, attempt: int, response: httpx.Response | None, rng=random) -> float:
        if response is not None:
            after = retry_after(response)
            if after is not None:
                return min(after, self.max_retry_after)
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2**attempt))


def retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """Seconds the server asked to wait, from `Retry-After` as delta-seconds or HTTP date."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())

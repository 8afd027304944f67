"""A tenant's quotas, each refused with 429, `Retry-After` and a problem type naming the limit
and its value: requests per minute (a moving window kept in Redis by the `limits` library, so
every gateway process counts together), active runs (queued + running records it owns) and
storage (bytes of the uploads it holds)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import redis
from limits import RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from service.problems import ProblemError, problem_response
from service.tenants.registry import Tenant
from tasks.contract.problem_types import uri
from tasks.contract.spec import JobStatus, Problem
from tasks.store.owners import Owners

ACTIVE = (JobStatus.queued, JobStatus.running)
StatusKey = Callable[[JobStatus | str], str]
RETRY_ACTIVE_S = 30  # a run takes seconds to minutes: ask again in half a minute


class RequestLimiter:
    """Each tenant's max_requests_per_minute, on the job store's Redis."""

    def __init__(self, client: redis.Redis) -> None:
        storage = RedisStorage("redis://", connection_pool=client.connection_pool)
        self.limiter = MovingWindowRateLimiter(storage)

    def hit(self, tenant: Tenant) -> Any | None:
        """None when the request may go on, else the 429 response that refuses it."""
        per_minute = tenant.quotas.get("max_requests_per_minute")
        if per_minute is None:
            return None
        item = RateLimitItemPerMinute(per_minute)
        try:
            if self.limiter.hit(item, "tenant", tenant.name):
                return None
            reset = self.limiter.get_window_stats(item, "tenant", tenant.name).reset_time
        except redis.RedisError:
            return None  # the limit is not kept while Redis is away; the routes answer 503
        retry = max(1, math.ceil(reset - time.time()))
        problem = Problem(
            type=uri("rate-limited"),
            title="Too many requests",
            status=429,
            detail=f"max_requests_per_minute={per_minute}: tenant {tenant.name} sent more "
            f"than {per_minute} requests in the last minute; retry after {retry} s",
        )
        return problem_response(problem, {"Retry-After": str(retry)})


def active_runs(tenant: str, owners: Owners, statuses: dict[str, StatusKey]) -> int:
    """The tenant's queued and running records; `statuses` maps a record kind (job,
    trajectory) to its store's status-index key function."""
    return sum(
        owners.count_within(kind, tenant, status_key(status))
        for kind, status_key in statuses.items()
        for status in ACTIVE
    )


def check_active_runs(tenant: Tenant, owners: Owners, statuses: dict[str, StatusKey]) -> None:
    """Refuse a new run when the tenant already has max_active_runs queued or running."""
    limit = tenant.quotas.get("max_active_runs")
    if limit is None:
        return
    active = active_runs(tenant.name, owners, statuses)
    if active >= limit:
        raise ProblemError(
            429,
            "quota-active-runs",
            f"max_active_runs={limit}: tenant {tenant.name} has {active} queued or running "
            "runs; wait for one to finish (or cancel one) and submit again",
            headers={"Retry-After": str(RETRY_ACTIVE_S)},
        )


def check_storage(tenant: Tenant, owners: Owners, adding: int) -> None:
    """Refuse an upload that would take the tenant past max_storage_bytes."""
    limit = tenant.quotas.get("max_storage_bytes")
    if limit is None:
        return
    used = owners.storage_bytes(tenant.name)
    if used + adding > limit:
        raise ProblemError(
            429,
            "quota-storage",
            f"max_storage_bytes={limit}: tenant {tenant.name} holds {used} bytes and this "
            f"upload adds {adding}; delete uploads it no longer needs and upload again",
            headers={"Retry-After": "3600"},
        )

"""Liveness, readiness and metrics: open without the API key, for orchestrators and scrapers."""

from __future__ import annotations

import redis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.common import problems
from service.deps import CeleryDep, JobsDep, SettingsDep
from service.ops import rows
from service.ops.consumers import consumers, fresh_s, live_workers
from service.ops.schemas import Health, Ready
from service.problems import ProblemError
from tasks.settings import Settings

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    """The process answers; touches nothing else (a Redis outage must not restart gateways)."""
    return Health()


PROBE_TIMEOUT_S = 2.0


def probe_client(request: Request, settings: Settings) -> redis.Redis:
    """A client for the readiness PING that fails at once: the stores' client waits out a
    Redis restart (tasks.store.records.redis_client, about 30 s), longer than any probe's timeout,
    and a probe must say "not ready" now rather than hold a gateway thread. One per app."""
    client = getattr(request.app.state, "readyz_redis", None)
    if client is None:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(
            settings.redis_url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=PROBE_TIMEOUT_S,
            socket_timeout=PROBE_TIMEOUT_S,
        )
        request.app.state.readyz_redis = client
    return client


@router.get("/readyz", response_model=Ready, summary="Readiness", responses=problems(503))
def readyz(request: Request, store: JobsDep, settings: SettingsDep, celery: CeleryDep) -> Ready:
    """Ready when Redis answers PING and at least one worker's heartbeat is fresh (within
    three heartbeat periods): without a worker, accepted jobs would only wait. Runs whose
    worker stopped beating are requeued on the way (see tasks.reaper).

    `checks` also has one entry per queue, `queue:gpu` and `queue:cpu`: `ok: N live
    consumers`, or `no-consumer: ...` with the queued runs that wait and the fix. A queue
    without a consumer does not make the gateway unready (still 200): the gateway serves
    reads and the other queue's jobs, every gateway shares the one Redis so all would drop
    out of their load balancer at once, and jobs on that queue run when a worker starts.
    Alert on it instead (deploy/prometheus/alerts.yml).

    Without Redis it answers 503 within about two seconds (its PING does not retry)."""
    checks: dict[str, str] = {}
    try:
        probe_client(request, settings).ping()
        checks["redis"] = "ok"
        rows.reap(store, settings, celery)
        snap = rows.snapshot(store)
        alive = live_workers(store, settings, snap.workers)
        checks["workers"] = (
            f"ok: {len(alive)} alive"
            if alive
            else f"failed: no worker heartbeat in {fresh_s(settings)} s"
        )
        per_queue = consumers(alive)
        for q, check in per_queue.items():
            check.queued = snap.queued_count(q)  # jobs and trajectories
            check.oldest_s = snap.oldest_queued_age_s(q)
            checks[f"queue:{q}"] = check.result()
    except redis.RedisError as e:
        checks["redis"] = f"failed: {e.__class__.__name__}: {e}"
        checks["workers"] = "unknown: Redis did not answer"
    failed = {k: v for k, v in checks.items() if v.startswith(("failed", "unknown"))}
    if failed:
        raise ProblemError(
            503,
            "not-ready",
            "; ".join(f"{k}: {v}" for k, v in failed.items()),
            title="Not ready",
            errors=[{"check": k, "result": v} for k, v in checks.items()],
        )
    return Ready(checks=checks)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request) -> Response:
    """Prometheus text format, computed from Redis at scrape time (see service.ops.metrics)."""
    body = generate_latest(request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

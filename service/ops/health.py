"""Liveness, readiness and metrics: open without the API key, for orchestrators and scrapers."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.common import problems
from service.deps import CeleryDep, JobsDep, SettingsDep
from service.ops import rows
from service.ops.schemas import Health, Ready
from service.problems import ProblemError

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    """The process answers; touches nothing else (a Redis outage must not restart gateways)."""
    return Health()


@router.get("/readyz", response_model=Ready, summary="Readiness", responses=problems(503))
def readyz(store: JobsDep, settings: SettingsDep, celery: CeleryDep) -> Ready:
    """Ready when Redis answers PING and at least one worker's heartbeat is fresh (within
    three heartbeat periods): without a worker, accepted jobs would only wait. Runs whose
    worker stopped beating are requeued on the way (see tasks.reaper)."""
    fresh_s = max(3 * settings.heartbeat_s, 10)
    checks: dict[str, str] = {}
    try:
        store.r.ping()
        checks["redis"] = "ok"
        rows.reap(store, settings, celery)
        now = datetime.now(UTC)
        alive = [
            w
            for w in store.workers()
            if (age := rows.worker_age_s(w, now)) is not None and age <= fresh_s
        ]
        checks["workers"] = (
            f"ok: {len(alive)} alive" if alive else f"failed: no worker heartbeat in {fresh_s} s"
        )
    except redis.RedisError as e:
        checks["redis"] = f"failed: {e.__class__.__name__}: {e}"
        checks["workers"] = "unknown: Redis did not answer"
    failed = {k: v for k, v in checks.items() if not v.startswith("ok")}
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

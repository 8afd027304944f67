"""Liveness, readiness and metrics: open without the API key, for orchestrators and scrapers."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.common import problems
from service.deps import CeleryDep, JobsDep, SettingsDep
from service.ops import rows
from service.ops.schemas import Health, Ready
from service.problems import ProblemError
from tasks.celery_app import QUEUES
from tasks.jobstore import JobStore, RecordStore
from tasks.settings import Settings
from tasks.spec import JobStatus

log = logging.getLogger("sharpness.gateway")
router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    """The process answers; touches nothing else (a Redis outage must not restart gateways)."""
    return Health()


def fresh_s(settings: Settings) -> int:
    """A heartbeat counts as live for three heartbeat periods (at least 10 s)."""
    return max(3 * settings.heartbeat_s, 10)


def worker_queues(worker: dict[str, Any]) -> tuple[list[str], bool]:
    """The queues a worker consumes, and whether that is certain (not assumed).

    A heartbeat that carries `queues` (tasks.worker writes them comma-separated; a JSON list
    is read too) is read as is.
    Without it the queues follow from the device: a worker without CUDA can only consume
    `cpu` (tasks.worker refuses `gpu` there), a CUDA worker is assumed to consume its default
    `gpu,cpu` (SHARPNESS_WORKER_QUEUES may have narrowed it; the answer says "assumed")."""
    raw = worker.get("queues")
    if raw:
        try:
            parsed = json.loads(raw) if raw.lstrip().startswith("[") else raw.split(",")
        except ValueError:
            parsed = raw.split(",")
        queues = [str(q).strip() for q in parsed if str(q).strip()]
        if queues:
            return queues, True
    device = str(worker.get("device") or "").lower()
    if "cuda" in device:
        return ["gpu", "cpu"], False
    return ["cpu"], True


@dataclass
class QueueCheck:
    """Who consumes one queue and what waits on it."""

    queue: str
    consumers: list[str] = field(default_factory=list)
    assumed: bool = False  # some consumer's queues were inferred from its device
    queued: int = 0
    oldest_s: float | None = None

    def result(self) -> str:
        if self.consumers:
            n = len(self.consumers)
            note = " (queues assumed from the device)" if self.assumed else ""
            return f"ok: {n} live consumer{'s' * (n != 1)}{note}"
        if not self.queued:
            return "no-consumer: nothing queued"
        oldest = f", oldest {self.oldest_s:.0f} s" if self.oldest_s is not None else ""
        return (
            f"no-consumer: {self.queued} queued run{'s' * (self.queued != 1)} wait{oldest}; "
            f"no live worker consumes '{self.queue}': {FIX[self.queue]}"
        )


# What to do when a queue has no consumer, named in /readyz and in the submit warning.
FIX = {
    "gpu": "start a worker on a CUDA device (SHARPNESS_WORKER_QUEUES unset or including "
    "'gpu'), or submit with device 'cpu' or 'auto'",
    "cpu": "start a worker whose SHARPNESS_WORKER_QUEUES includes 'cpu' (the default)",
}


def live_workers(
    store: JobStore, settings: Settings, workers: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The workers (read from `store` unless given) whose last heartbeat is fresh."""
    now = datetime.now(UTC)
    limit = fresh_s(settings)
    return [
        w
        for w in (store.workers() if workers is None else workers)
        if (age := rows.worker_age_s(w, now)) is not None and age <= limit
    ]


def consumers(workers: list[dict[str, Any]]) -> dict[str, QueueCheck]:
    checks = {q: QueueCheck(q) for q in QUEUES}
    for w in workers:
        queues, certain = worker_queues(w)
        for q in queues:
            if q in checks:
                checks[q].consumers.append(w["hostname"])
                checks[q].assumed |= not certain
    return checks


PROBE_TIMEOUT_S = 2.0


def probe_client(request: Request, settings: Settings) -> redis.Redis:
    """A client for the readiness PING that fails at once: the stores' client waits out a
    Redis restart (tasks.jobstore.redis_client, about 30 s), longer than any probe's timeout,
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


# The header a submit answers with when no live worker consumes the record's queue.
SUBMIT_WARNING = {
    202: {
        "headers": {
            "Warning": {
                "description": "Present when no live worker consumes the queue the record "
                "went to: `199 - \"no live worker consumes queue 'gpu' (device 'cuda') ...\"` "
                "with the fix. The record is made and queued all the same; it runs when "
                "such a worker starts.",
                "schema": {"type": "string"},
            }
        }
    }
}


def warn_if_unconsumed(
    response: Response, store: RecordStore, settings: Settings, record: Any
) -> None:
    """Set a submit's `Warning` header when the record (a job or a trajectory) is queued and
    no live worker consumes its queue; never fails the submit (the record is made and
    enqueued already)."""
    if record.status != JobStatus.queued:
        return
    try:
        check = consumers(live_workers(JobStore(store.r), settings)).get(record.queue)
    except redis.RedisError:
        return
    if check is None or check.consumers:
        return
    text = (
        f"no live worker consumes queue '{record.queue}' (device '{record.spec.device}'); "
        f"it waits in the queue until one starts: {FIX[record.queue]}"
    )
    log.warning("submit %s: %s", record.id, text)
    response.headers["Warning"] = f'199 - "{text}"'


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

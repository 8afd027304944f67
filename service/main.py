"""The gateway: `create_app(settings)` builds a FastAPI app; `app` is the default one.

Nothing connects at import: the Redis client and the Celery producer open connections on first
use, so `import service.main` is fast and works with Redis down (readyz reports it). The
gateway never imports torch (tests/api/test_gateway_layout.py checks it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

import redis
from celery import Celery
from fastapi import Depends, FastAPI

from service import broker, docs_ui, problems
from service.blobs import datasets, models
from service.common import problems as problem_responses
from service.guard import Guard
from service.jobs import compare_router, measures, plots
from service.jobs import router as jobs
from service.ops import health, queue
from service.ops.consumers import ConsumedQueues
from service.ops.metrics import make_registry
from service.ops.tenant_metrics import TenantRunsCollector
from service.studies import router as studies
from service.studies.store import StudyStore
from service.tenants.access import authorize
from service.tenants.quotas import RequestLimiter
from service.tenants.registry import Tenants
from service.trajectories import optimizer_states
from service.trajectories import router as trajectories
from tasks.app import make_celery
from tasks.settings import Settings, get_settings
from tasks.store.blobs import BlobStore
from tasks.store.owners import Owners
from tasks.store.records import JobStore
from tasks.store.trajectories import TrajectoryStore

log = logging.getLogger("sharpness.gateway")

DESCRIPTION = """Measure the sharpness of trained networks (Hessian spectrum, trace,
adaptive sharpness) as queued jobs. Upload a model and a dataset, submit a job, poll it.

Every error is `application/problem+json` (RFC 9457): `type`, `title`, `status`, and a
`detail` naming the field or file at fault; validation errors add `errors`."""


# A request waits out a Redis blip of this long, then answers 503 redis-unavailable with
# Retry-After: a client retries, a dashboard poll fails fast (the worker's stores wait ~30 s).
# Short, too, because the record lookups, the job read and the submit run on the event loop
# (no thread hop: twice the status reads per CPU second), so a wait here holds the process'
# other requests; for that reason a connection attempt (a Redis behind a partition, where
# nothing refuses it) gives up after a second, not the workers' five.
GATEWAY_REDIS_RETRY_S = 0.5
GATEWAY_REDIS_CONNECT_S = 1.0


def gateway_celery(settings: Settings) -> Celery:
    """The shared Celery app, with publishing that gives up within seconds: a client waiting
    on POST /v1/jobs should get a 503 quickly, not hang while the broker is down (kombu's
    default is up to 100 connection retries); and kombu's Redis transport publishing through
    one client per channel (service.broker)."""
    app = make_celery(settings)
    app.conf.broker_transport = broker.TRANSPORT  # one publishing client per channel
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "max_retries": 2,
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 1,
        "socket_connect_timeout": GATEWAY_REDIS_CONNECT_S,
    }
    return app


def build_indexes(jobs: JobStore) -> None:
    """Index the records a store without per-status indexes wrote (tasks.store.records), once, at
    start: the first `/v1/queue` or `/metrics` then reads counts at once instead of waiting
    on a rebuild. One gateway process rebuilds under the store's lock; a view that finds the
    indexes still missing (Redis was down now, or restored from an old dump later) rebuilds
    them itself."""
    for store in (jobs, TrajectoryStore(jobs.r)):
        try:
            store.ensure_indexes()
        except redis.RedisError as e:
            log.warning("%s indexes not checked at start (%s); the first view will", store.KIND, e)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At start, in a thread (serving begins at once): the one-time index rebuild."""
    building = asyncio.get_running_loop().run_in_executor(None, build_indexes, app.state.jobs)
    yield
    await building


def create_app(settings: Settings | None = None) -> FastAPI:
    s = settings or get_settings()
    app = FastAPI(
        lifespan=lifespan,
        title="Sharpness service",
        version=version("sharpness-service"),  # pyproject.toml holds it
        description=DESCRIPTION,
        docs_url=None,  # served from installed files by docs_ui, not from CDNs
        redoc_url=None,
    )
    app.state.settings = s
    app.state.blobs = BlobStore(s.blob_dir)
    app.state.jobs = JobStore.from_url(
        s.redis_url, retry_s=GATEWAY_REDIS_RETRY_S, connect_timeout_s=GATEWAY_REDIS_CONNECT_S
    )
    app.state.studies = StudyStore(app.state.jobs.r)
    app.state.owners = Owners(app.state.jobs.r)
    app.state.tenants = Tenants.from_settings(s)  # a broken tenants file stops the start
    names = [t.name for t in app.state.tenants.tenants]
    by_tenant = TenantRunsCollector(app.state.owners, names)
    app.state.metrics_registry = make_registry(app.state.jobs, by_tenant)
    app.state.celery = gateway_celery(s)
    app.state.consumed = ConsumedQueues()
    problems.install(app)
    auth = [Depends(authorize)]  # the caller's role and ownership of the ids it names
    answers = problem_responses(401, 403, 429)
    routers = (models, datasets, jobs, studies, measures, queue, compare_router)
    for router in (r.router for r in routers):
        # every /v1 route can answer 401, 403 and 429, documented whether or not keys are set
        app.include_router(router, dependencies=auth, responses=answers)
    for router in (optimizer_states.router, trajectories.router, plots.router):
        app.include_router(router, dependencies=auth, responses=answers)
    app.include_router(health.router)
    docs_ui.install(app)
    # the caller's key, its request rate and the JSON size cap are checked before any body
    limiter = RequestLimiter(app.state.jobs.r)
    app.add_middleware(Guard, settings=s, tenants=app.state.tenants, limiter=limiter)
    return app


app = create_app()

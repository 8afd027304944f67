"""What jobs and trajectories share in the gateway: submit with an Idempotency-Key, send the
record's one Celery message (or fail the record), list with filters, and cancel.

Both kinds are runs of one `RecordStore` lifecycle (queued → running → succeeded, failed or
cancelled), so their routers differ only in the spec they check and the task they enqueue.
ignore_result on the message: results live in the record, not in Celery's result backend;
without it Celery would also subscribe the gateway to every task's result channel, for good.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any, NamedTuple, TypeVar

from celery import Celery
from fastapi import Depends, Header, Query, Response

from service.deps import (
    BlobsDep,
    CallerDep,
    CeleryDep,
    ConsumedDep,
    JobsDep,
    OwnersDep,
    SettingsDep,
)
from service.ops import consumers
from service.ops.consumers import ConsumedQueues
from service.problems import ProblemError, invalid
from service.tenants import ownership
from service.tenants.holdings import HeldBlobs
from service.tenants.listing import labels_of, owned_page, run_filter
from service.tenants.registry import Tenant
from tasks import reaper
from tasks.app import queue_for
from tasks.contract.problem_types import uri
from tasks.contract.spec import Job, JobStatus, Problem, Trajectory
from tasks.settings import Settings
from tasks.store.blobs import BlobStore
from tasks.store.owners import Owners
from tasks.store.records import JobStore, RecordStore

log = logging.getLogger("sharpness.gateway")

Run = TypeVar("Run", Job, Trajectory)

# Enough retries to ride out a broker blip, few enough to answer within seconds.
SEND_RETRY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Resubmitting with the same key (for 24 h) returns the record made the first "
        "time, whatever its state (even if its model or dataset was deleted since), and "
        "enqueues nothing. A different spec under a used key is a 409. After a 503 (the record "
        "could not be enqueued) the key is free again: the retry makes and enqueues a new one.",
    ),
]
StatusFilter = Annotated[JobStatus | None, Query(description="Only records in this state.")]
LabelFilter = Annotated[
    list[str] | None, Query(description="key:value; repeat for several (all must match).")
]
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page.")]


def enqueue_or_fail(
    celery: Any, store: RecordStore, task: str, record_id: str, queue: str, noun: str
) -> None:
    """Send `task` with the record's id as argument and task id; on failure mark the record
    failed with the reason and answer 503 with Retry-After."""
    try:
        celery.send_task(
            task,
            args=[record_id],
            task_id=record_id,
            queue=queue,
            ignore_result=True,
            retry=True,
            retry_policy=SEND_RETRY,
        )
    except Exception as e:
        log.error("enqueue of %s %s failed: %s", noun, record_id, e)
        detail = f"{noun} {record_id} could not be enqueued on '{queue}': {e.__class__.__name__}"
        store.finish(
            record_id,
            JobStatus.failed,
            error=Problem(
                type=uri("enqueue-failed"),
                title="Could not enqueue",
                status=503,
                detail=detail,
            ),
        )
        raise ProblemError(
            503,
            "enqueue-failed",
            f"{detail}; the {noun} is marked failed, submit again",
            headers={"Retry-After": "5"},
        ) from e


def submit(
    store: RecordStore,
    spec: Any,
    *,
    task: str,
    location: str,
    celery: Any,
    response: Response,
    idempotency_key: str | None,
    check: Callable[[], None],
    on_created: Callable[[Any], None] = lambda record: None,
) -> tuple[Any, bool]:
    """Record and enqueue a run at `location`/{id}; returns (record as GET shows it, replayed).

    `check` validates what the spec names (uploads, URIs); `on_created` sees the record before
    its message is sent (its owner is claimed then, so a run whose enqueue fails is still its
    tenant's). A replay under an Idempotency-Key
    answers the record made the first time without checking again (its inputs may have been
    deleted since) and sends nothing; one message per record even when two requests with one
    key race (`mark_enqueued`).

    The submit routes are async and call this on the event loop: a thread hop and the GIL
    handoffs between the pool's threads cost more than the submit's own Redis round trips
    (service.main bounds how long those wait when Redis is away)."""
    noun = store.KIND
    if not (idempotency_key and store.find_idempotent(idempotency_key) is not None):
        check()
    record = store.create(spec, queue_for(spec.device), idempotency_key)  # as GET shows it
    on_created(record)
    response.headers["Location"] = f"{location}/{record.id}"
    if idempotency_key:
        if record.spec.model_dump() != spec.model_dump():
            raise ProblemError(
                409,
                "idempotency-key-reused",
                f"Idempotency-Key: already used for {noun} {record.id} with a different spec",
            )
        if not store.mark_enqueued(record.id):
            response.headers["Idempotent-Replayed"] = "true"
            return record, True
    try:
        enqueue_or_fail(celery, store, task, record.id, record.queue, noun)
    except ProblemError:
        if idempotency_key:  # the retry the 503 asks for must enqueue, not replay a failure
            store.release_idempotency(idempotency_key, record.id)
        raise
    return record, False


class RunRoute(NamedTuple):
    """What the submit and cancel routes of jobs and trajectories work with: the caller and
    the owner index, the settings, the Celery app, the queues live workers consume, the blob
    store, and the job store (where the workers' heartbeats are)."""

    tenant: Tenant
    owners: Owners
    settings: Settings
    celery: Celery
    consumed: ConsumedQueues
    blobs: BlobStore
    heartbeats: JobStore


async def run_route(
    tenant: CallerDep,
    owners: OwnersDep,
    settings: SettingsDep,
    celery: CeleryDep,
    consumed: ConsumedDep,
    blobs: BlobsDep,
    jobs: JobsDep,
) -> RunRoute:
    return RunRoute(tenant, owners, settings, celery, consumed, blobs, jobs)


RunRouteDep = Annotated[RunRoute, Depends(run_route)]


def submit_owned(
    store: RecordStore,
    spec: Any,
    route: RunRoute,
    *,
    task: str,
    location: str,
    idempotency_key: str | None,
    check: Callable[[HeldBlobs], None],
    response: Response,
) -> tuple[Any, bool]:
    """`submit` for a tenant: the Idempotency-Key in the tenant's space, the active-runs
    quota, `check` against the uploads the tenant holds, the record claimed as the tenant's,
    and the Warning header when no live worker consumes its queue."""
    tenant, owners = route.tenant, route.owners
    key = ownership.scoped_key(tenant, idempotency_key)
    held = ownership.new_run(tenant, owners, store, key)
    record, replayed = submit(
        store,
        spec,
        task=task,
        location=location,
        celery=route.celery,
        response=response,
        idempotency_key=key,
        check=lambda: check(held(route.blobs)),
        on_created=lambda made: ownership.claim(
            owners, store.KIND, made.id, tenant, made.created_at
        ),
    )
    consumers.warn_if_unconsumed(response, store, route.settings, record, route.consumed)
    return record, replayed


class RunQuery(NamedTuple):
    """A list request: the caller with the owner index, and the query's filters and page."""

    tenant: Tenant
    owners: Owners
    status: JobStatus | None
    label: list[str] | None
    limit: int
    cursor: str | None


async def run_query(
    tenant: CallerDep,
    owners: OwnersDep,
    status: StatusFilter = None,
    label: LabelFilter = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> RunQuery:
    return RunQuery(tenant, owners, status, label, limit, cursor)


RunQueryDep = Annotated[RunQuery, Depends(run_query)]


def page(store: RecordStore, query: RunQuery) -> tuple[list[Any], str | None]:
    """One page of the records the caller may list, newest first, with `label` filters given
    as key:value: the whole store for a tenant that reads all, else the caller's own."""
    tenant, owners, status, label, limit, cursor = query
    if not tenant.reads_all:
        keep = run_filter(status, label)
        return owned_page(owners, store.KIND, tenant.name, store.get, keep, limit, cursor)
    try:
        return store.page(status, labels_of(label), limit, cursor)
    except ValueError as e:
        raise invalid("query.cursor", str(e)) from e


def cancel(store: RecordStore, record: Run, route: RunRoute, response: Response) -> Run:
    """Cancel a run: a queued one at once (200), a running one by flag (202, the worker stops
    between iterations), a running one whose worker stopped beating at once (200, reaped);
    a cancelled one is a no-op (200); a succeeded or failed one cannot be cancelled (409).
    The record notes the tenant that asked first."""
    tenant, heartbeats, settings, celery = (
        route.tenant,
        route.heartbeats,
        route.settings,
        route.celery,
    )
    noun, record_id = store.KIND, record.id
    if record.status != JobStatus.cancelled:
        record = store.request_cancel(record_id, by=tenant.name) or record
    if record.status == JobStatus.running:
        reaper.reap_one(store, heartbeats, record_id, settings, reaper.celery_sender(celery))
        record = store.get(record_id) or record
    status = record.status
    if status in (JobStatus.succeeded, JobStatus.failed):
        raise ProblemError(
            409,
            "already-finished",
            f"id: {noun} {record_id} already {status.value}; nothing to cancel",
        )
    response.status_code = 200 if status == JobStatus.cancelled else 202
    return record

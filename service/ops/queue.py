"""Operations view of the queues: what waits, what runs, who works."""

from __future__ import annotations

from fastapi import APIRouter

from service.common import problems
from service.deps import CeleryDep, JobsDep, OwnersDep, SettingsDep, TenantsDep
from service.ops import rows
from service.ops.schemas import QueueDepth, QueueStatus, RunningJob, WorkerInfo
from service.tenants.ownership import RUN_STATUS_KEYS
from service.tenants.quotas import active_runs
from tasks.app import QUEUES

router = APIRouter(prefix="/v1/queue", tags=["queue"])


@router.get("", response_model=QueueStatus, summary="Queue status", responses=problems(503))
def queue_status(
    store: JobsDep,
    settings: SettingsDep,
    celery: CeleryDep,
    owners: OwnersDep,
    tenants: TenantsDep,
) -> QueueStatus:
    """Per queue: broker messages waiting and reserved (taken by a worker, not acknowledged:
    with acks_late, that is while the job runs), queued job and trajectory records (cancelled
    ones excluded) and the oldest one's age. Also the workers with a live heartbeat, the
    running jobs and trajectories, and record counts by status. Read from the stores'
    per-status indexes: the cost does not grow with the number of records. Runs whose worker
    stopped beating are requeued first (see tasks.reaper). Each running record names its
    owner, and `active_by_tenant` counts each tenant's queued and running records. For ops
    and admin keys only (403 for a user)."""
    rows.reap(store, settings, celery)
    snap = rows.snapshot(store)
    return QueueStatus(
        queues=[
            QueueDepth(
                name=q,
                waiting=snap.waiting.get(q, 0),
                reserved=snap.reserved.get(q, 0),
                queued_jobs=snap.queued_count(q, "job"),
                queued_trajectories=snap.queued_count(q, "trajectory"),
                oldest_queued_age_s=snap.oldest_queued_age_s(q),
            )
            for q in QUEUES
        ],
        workers=[
            WorkerInfo(
                hostname=w["hostname"],
                device=w.get("device"),
                last_seen=w.get("last_seen"),
                age_s=rows.worker_age_s(w, snap.taken_at),
            )
            for w in snap.workers
        ],
        running=[
            RunningJob(
                id=r.id,
                kind=r.kind,
                queue=r.queue,
                worker=r.worker,
                device=r.device,
                started_at=r.started_at,
                owner=owners.owner(r.kind, r.id),
            )
            for r in snap.running()
        ],
        oldest_queued_age_s=snap.oldest_queued_age_s(),
        jobs_by_status=snap.by_status("job"),
        trajectories_by_status=snap.by_status("trajectory"),
        active_by_tenant={
            t.name: active_runs(t.name, owners, RUN_STATUS_KEYS) for t in tenants.tenants
        },
    )

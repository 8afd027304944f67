"""Stamping what a tenant makes, checking its run quota, and recording who cancelled or
deleted a record: the steps the submit, cancel and delete routes share."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from service.tenants.holdings import HeldBlobs
from service.tenants.quotas import StatusKey, check_active_runs
from service.tenants.registry import OPEN, Tenant
from tasks.store.blobs import BlobStore
from tasks.store.owners import Owners
from tasks.store.records import JobStore, RecordStore
from tasks.store.trajectories import TrajectoryStore

log = logging.getLogger("sharpness.gateway")

RUN_STATUS_KEYS: dict[str, StatusKey] = {
    JobStore.KIND: JobStore.status_key,
    TrajectoryStore.KIND: TrajectoryStore.status_key,
}


def new_run(
    tenant: Tenant, owners: Owners, store: RecordStore, scoped_idempotency_key: str | None
) -> Callable[[BlobStore], HeldBlobs]:
    """Refuse a run over the tenant's max_active_runs (429), unless the request replays a
    record made before under its Idempotency-Key; returns how to see the blob store as the
    tenant does, for the spec's reference checks."""
    key = scoped_idempotency_key
    if not (key and store.find_idempotent(key) is not None):
        check_active_runs(tenant, owners, RUN_STATUS_KEYS)

    def held(blobs: BlobStore) -> HeldBlobs:
        return HeldBlobs(blobs, owners, tenant)

    return held


def scoped_key(tenant: Tenant, idempotency_key: str | None) -> str | None:
    """An Idempotency-Key in the tenant's own space: one tenant's key never replays
    another's record."""
    if idempotency_key is None or tenant is OPEN:
        return idempotency_key
    return f"{tenant.name}/{idempotency_key}"


def claim(owners: Owners, kind: str, record_id: str, tenant: Tenant, created: datetime) -> None:
    owners.claim(kind, record_id, tenant.name, created.timestamp())


def record_delete(store: RecordStore, owners: Owners, record_id: str, tenant: Tenant) -> None:
    """Delete a record, keeping a note of who deleted it (tasks.store.owners)."""
    store.delete(record_id)
    owners.forget(store.KIND, record_id, tenant.name)
    log.info("%s %s deleted by tenant %s", store.KIND, record_id, tenant.name)

"""Uploads per tenant: one file on disk for the same bytes, one hold per tenant that uploaded
them (tasks.store.owners).

A tenant uploading bytes another tenant holds gets the answer a fresh upload gets (201, its own
file name and time), and the bytes count against its storage quota; a delete drops the caller's
hold and removes the file once nobody holds it. A `user` reads its uploads as it uploaded them;
ops and admin read the stored record.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.common import not_found
from service.deps import Uploader
from service.tenants.quotas import check_storage
from service.tenants.registry import Tenant
from tasks.store.blobs import BlobStore, Staged
from tasks.store.owners import Owners

PER_HOLDER = ("filename", "created_at")  # what each holder sees of its own upload


def keep(
    uploader: Uploader, staged: Staged, meta: dict[str, Any]
) -> tuple[dict[str, Any], bool, bool]:
    """Make staged bytes the calling tenant's upload (429 past its storage quota, nothing
    kept). Returns (the record as the tenant sees it, new to the store, new to the tenant)."""
    blobs, _, tenant, owners = uploader
    if not owners.holds(staged.kind, staged.sha256, tenant.name):
        try:
            check_storage(tenant, owners, staged.size)
        except BaseException:
            blobs.discard(staged)
            raise
    record, created = blobs.commit(staged, meta)
    seen = {"filename": meta.get("filename"), "created_at": datetime.now(UTC).isoformat()}
    if created:
        seen["created_at"] = record.get("created_at")
    fresh = owners.hold(staged.kind, staged.sha256, tenant.name, int(record["size_bytes"]), **seen)
    return seen_by(record, owners, tenant, staged.kind), created, fresh


def seen_by(record: dict[str, Any], owners: Owners, tenant: Tenant, kind: str) -> dict[str, Any]:
    """The record with the tenant's own file name and upload time (users only)."""
    if tenant.reads_all:
        return record
    held = owners.holding(kind, str(record.get("id")), tenant.name) or {}
    return {**record, **{k: held[k] for k in PER_HOLDER if k in held}}


def listed(blobs: BlobStore, owners: Owners, tenant: Tenant, kind: str) -> list[dict[str, Any]]:
    """The uploads of `kind` the tenant sees, newest first by its own upload time."""
    records = blobs.records(kind)
    if tenant.reads_all:
        return records
    held = owners.held(kind, tenant.name)
    mine = [seen_by(r, owners, tenant, kind) for r in records if r.get("id") in held]
    mine.sort(key=lambda r: (str(r.get("created_at", "")), str(r.get("id", ""))), reverse=True)
    return mine


def release(
    blobs: BlobStore, owners: Owners, tenant: Tenant, kind: str, noun: str, blob_id: str
) -> bool:
    """Drop the tenant's hold on an upload; True when nobody holds it any more and its bytes
    should go. An admin deleting bytes it does not hold removes them for everyone."""
    if blobs.meta(kind, blob_id) is None:
        raise not_found(noun, blob_id)
    if owners.holds(kind, blob_id, tenant.name):
        return owners.release(kind, blob_id, tenant.name) == 0
    if tenant.acts_on_all:
        owners.forget_blob(kind, blob_id)
        return True
    raise not_found(noun, blob_id)

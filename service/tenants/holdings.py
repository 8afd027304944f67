"""The uploads a tenant may use: the blob store as that tenant sees it.

A run's spec naming a model, dataset or optimizer state the tenant does not hold gets the same
422 (`unknown`, naming the field) as one that was never uploaded, because the lookups that
check a spec go through `HeldBlobs.meta`.
"""

from __future__ import annotations

from typing import Any

from service.tenants.registry import Tenant
from tasks.store.blobs import BlobStore
from tasks.store.owners import Owners


class HeldBlobs:
    """`meta` of the blobs `tenant` holds (every blob for an admin); None for the others."""

    def __init__(self, blobs: BlobStore, owners: Owners, tenant: Tenant) -> None:
        self.blobs, self.owners, self.tenant = blobs, owners, tenant

    def meta(self, kind: str, blob_id: str) -> dict[str, Any] | None:
        if not self.visible(kind, blob_id):
            return None
        return self.blobs.meta(kind, blob_id)

    def visible(self, kind: str, blob_id: str) -> bool:
        return self.tenant.acts_on_all or self.owners.holds(kind, blob_id, self.tenant.name)

    def path(self, kind: str, blob_id: str) -> Any:
        return self.blobs.path(kind, blob_id)

    def records(self, kind: str) -> list[dict[str, Any]]:
        """The metadata of the blobs the tenant sees, newest first."""
        records = self.blobs.records(kind)
        if self.tenant.reads_all:
            return records
        held = self.owners.held(kind, self.tenant.name)
        return [r for r in records if r.get("id") in held]

"""Which queued or running jobs and trajectories use an uploaded model or dataset.

A delete of bytes that a waiting or running record needs would make that record fail when a
worker loads them, so the delete handlers ask here first and answer 409 (`in-use`) naming the
records, unless the caller says `?force=true`. Read-only: the per-status indexes of the run
stores (`{index}:status:queued`, `{index}:status:running`) give the active ids, and each one's
spec is read in one pipelined round trip per store. The cost follows the active records, never
the ended ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Query

from service.blobs import holding
from service.common import not_found
from service.problems import ProblemError, invalid
from service.tenants.registry import Tenant
from tasks.contract.spec import JobStatus
from tasks.store.blobs import BlobStore
from tasks.store.owners import Owners
from tasks.store.records import RecordStore

Mine = Callable[[str, str], bool]  # (record kind, id) -> whether the caller owns it
Holds = tuple[Tenant, Owners]  # who deletes, and where holds are kept

ACTIVE = (JobStatus.queued, JobStatus.running)
SHOWN = 10  # records named in the answer; the count says how many more

Force = Annotated[
    bool,
    Query(
        description="Delete even when queued or running jobs or trajectories use it (they will "
        "fail when a worker loads it)."
    ),
]


def _uses(spec: dict[str, Any], kind: str, blob_id: str) -> bool:
    """Whether a job's or trajectory's spec (as stored, JSON) names the blob."""
    if kind == "models":
        names = [spec.get("model"), spec.get("initial_model")]
        names += [c.get("model") for c in spec.get("checkpoints") or [] if isinstance(c, dict)]
        return blob_id in names
    refs = (spec.get("dataset"), spec.get("eval_dataset"))
    return any(isinstance(r, dict) and r.get("id") == blob_id for r in refs)


def active_users(
    stores: list[RecordStore], kind: str, blob_id: str, owner: Mine | None = None
) -> list[tuple[str, str]]:
    """(record kind, id) of each queued or running record that names the blob, oldest first;
    with `owner`, only the records it accepts (a user's delete names only its own)."""
    found: list[tuple[str, str]] = []
    for store in stores:
        store.ensure_indexes()
        pipe = store.r.pipeline(transaction=False)
        for status in ACTIVE:
            pipe.zrange(store.status_key(status), 0, -1)
        ids = list(dict.fromkeys(i for batch in pipe.execute() for i in batch))
        if not ids:
            continue
        pipe = store.r.pipeline(transaction=False)
        for record_id in ids:
            pipe.hget(store.key(record_id), "spec")
        for record_id, raw in zip(ids, pipe.execute(), strict=True):
            try:
                spec = json.loads(raw) if raw else None
            except ValueError:
                continue
            if isinstance(spec, dict) and _uses(spec, kind, blob_id):
                if owner is None or owner(store.KIND, record_id):
                    found.append((store.KIND, record_id))
    return found


def refuse_if_used(
    stores: list[RecordStore], kind: str, noun: str, blob_id: str, owner: Mine | None = None
) -> None:
    """409 `in-use` naming the active records that use the blob, and both fixes."""
    users = active_users(stores, kind, blob_id, owner)
    if not users:
        return
    named = ", ".join(f"{k} {i}" for k, i in users[:SHOWN])
    more = f" and {len(users) - SHOWN} more" if len(users) > SHOWN else ""
    cancel = "; ".join(
        f"sharpness {'jobs' if k == 'job' else 'trajectory'} cancel {i}" for k, i in users[:2]
    )
    raise ProblemError(
        409,
        "in-use",
        f"id: {noun} {blob_id} is used by {len(users)} queued or running "
        f"record{'s' if len(users) != 1 else ''}: {named}{more}. Wait for them to finish or "
        f"cancel them ({cancel}), or delete it anyway with ?force=true (sharpness "
        f"{noun}s delete --force; they will then fail when a worker loads it)",
    )


def delete(
    blobs: BlobStore,
    stores: list[RecordStore],
    kind: str,
    noun: str,
    blob_id: str,
    force: bool,
    holds: Holds,
) -> None:
    """Remove the caller's hold on an upload, and its bytes once nobody holds it: 404 when
    there are none (or the caller holds none), 409 while an active record of the caller's
    uses it (unless `force`)."""
    if blobs.meta(kind, blob_id) is None:
        raise not_found(noun, blob_id)
    tenant, owners = holds
    if not force:
        mine = None if tenant.acts_on_all else _owned_by(owners, tenant.name)
        refuse_if_used(stores, kind, noun, blob_id, mine)
    if holding.release(blobs, owners, tenant, kind, noun, blob_id) and not blobs.delete(
        kind, blob_id
    ):
        raise not_found(noun, blob_id)


def _owned_by(owners: Owners, tenant: str) -> Mine:
    def mine(kind: str, record_id: str) -> bool:
        return owners.owner(kind, record_id) == tenant

    return mine


def page(records: list[dict[str, Any]], limit: int, cursor: str | None, noun: str):
    """One page of `records` (newest first) after the record whose id is `cursor`."""
    start = 0
    if cursor:
        ids = [r.get("id") for r in records]
        if cursor not in ids:
            raise invalid("query.cursor", f"no {noun} {cursor}: pass the next_cursor of a page")
        start = ids.index(cursor) + 1
    items = records[start : start + limit]
    more = start + limit < len(records)
    return items, (items[-1]["id"] if more and items else None)

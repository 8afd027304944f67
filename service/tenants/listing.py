"""A tenant's own records, newest first, page by page: the lists a `user` key sees.

The pages walk the tenant's owner index (tasks.store.owners) and read only its records, so a
tenant's list costs what it owns, not the whole store. The cursor is the last id of the
previous page, as in the unfiltered lists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from service.problems import invalid
from tasks.contract.spec import JobStatus
from tasks.store.owners import Owners

R = TypeVar("R")


def labels_of(label: list[str] | None) -> dict[str, str]:
    """`key:value` filters as a dict (422 naming query.label for another shape)."""
    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise invalid("query.label", f"{item!r} is not key:value")
        labels[key] = value
    return labels


def run_filter(status: JobStatus | None, label: list[str] | None) -> Callable[[Any], bool]:
    """Whether a job or trajectory passes the list's status and label filters."""
    labels = labels_of(label)

    def keep(record: Any) -> bool:
        if status is not None and record.status != status:
            return False
        return all(record.spec.labels.get(k) == v for k, v in labels.items())

    return keep


def owned_page(
    owners: Owners,
    kind: str,
    tenant: str,
    get: Callable[[str], R | None],
    keep: Callable[[R], bool],
    limit: int,
    cursor: str | None,
) -> tuple[list[R], str | None]:
    """At most `limit` of the tenant's records of `kind` that `keep` accepts, newest first,
    and the cursor of the next page (None at the end)."""
    start = 0
    if cursor:
        after = owners.rank_after(kind, tenant, cursor)
        if after is None:
            raise invalid("query.cursor", f"cursor does not name a {kind}")
        start = after
    items: list[R] = []
    last: str | None = None
    gone: list[str] = []  # expired records, dropped from the index once the page is read
    more = True
    while more and len(items) < limit:
        ids = owners.owned_ids(kind, tenant, start, max(limit, 50))
        more = bool(ids)
        for record_id in ids:
            start += 1
            last = record_id
            record = get(record_id)
            if record is None:
                gone.append(record_id)
            elif keep(record):
                items.append(record)
                if len(items) == limit:
                    break
    more = more and bool(owners.owned_ids(kind, tenant, start, 1))
    owners.drop_gone(kind, tenant, [i for i in gone if not (more and i == last)])  # the cursor
    return items, (last if more else None)

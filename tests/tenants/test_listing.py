"""A tenant's own records page by page: newest first, filters kept, expired records skipped
and dropped from its index, the cursor valid across pages; and upload holds with storage."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
import redis

from service.problems import ProblemError
from service.tenants.listing import owned_page
from tasks.store.keys import OwnerKeys
from tasks.store.owners import Owners


@pytest.fixture
def owners(redis_url: str) -> Owners:
    """Owners under a prefix of their own: nothing else in the database is touched."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    return Owners(client, OwnerKeys(prefix=f"test:{uuid.uuid4().hex}:owner:"))


def test_pages_of_own_records(owners: Owners) -> None:
    records = {f"{i:032x}": SimpleNamespace(id=f"{i:032x}", n=i) for i in range(12)}
    for i, rid in enumerate(records):
        owners.claim("job", rid, "a", created=1000.0 + i)
    owners.claim("job", "f" * 32, "b", created=5000.0)
    gone = {f"{3:032x}", f"{11:032x}"}  # expired since

    def get(rid: str):
        return None if rid in gone else records.get(rid)

    def even(r) -> bool:
        return r.n % 2 == 0

    seen, cursor = [], None
    while True:
        items, cursor = owned_page(owners, "job", "a", get, even, 2, cursor)
        seen += [r.n for r in items]
        if cursor is None:
            break
    assert seen == [10, 8, 6, 4, 2, 0]
    assert owners.count_owned("job", "a") == 10  # the two expired ones were dropped
    with pytest.raises(ProblemError):
        owned_page(owners, "job", "a", get, even, 2, "f" * 32)  # b's id is no cursor for a


def test_holds_and_storage(owners: Owners) -> None:
    blob = "e" * 64
    assert owners.hold("models", blob, "a", 100, filename="m.pt2")
    assert not owners.hold("models", blob, "a", 100)  # holding twice costs nothing more
    assert owners.hold("models", blob, "b", 100, filename="mine")
    assert owners.storage_bytes("a") == owners.storage_bytes("b") == 100
    assert owners.holding("models", blob, "b")["filename"] == "mine"
    assert owners.release("models", blob, "a") == 1
    assert owners.storage_bytes("a") == 0 and not owners.holds("models", blob, "a")
    assert owners.release("models", blob, "b") == 0

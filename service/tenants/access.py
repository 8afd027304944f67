"""What the caller's role lets it do, and whose records it may touch, checked once per route.

`authorize` runs before every /v1 route (service.main adds it to each router): a role that may
not use the route gets 403; a `user` naming an id it does not own gets the same 404 as an id
that never existed, so nothing about other tenants' records leaks. The kind of record a route's
`{id}` names is read from the route's path, so a new route under a known prefix is covered as
soon as it exists, and a route with an id of an unknown kind refuses users (404).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from service.deps import bearer, caller
from service.problems import ProblemError
from service.tenants.registry import Role, Tenant
from tasks.store.owners import Owners

READS = ("GET", "HEAD")


@dataclass(frozen=True)
class Owned:
    """The records or uploads a route prefix's `{id}` names."""

    prefix: str
    kind: str  # the owners' kind: a record kind or a blob kind
    noun: str
    blob: bool  # uploads have holders, records one owner


OWNED = (  # longest prefix first
    Owned("/v1/trajectories/optimizer-states/", "optimizer_states", "optimizer state", True),
    Owned("/v1/trajectories/", "trajectory", "trajectory", False),
    Owned("/v1/jobs/", "job", "job", False),
    Owned("/v1/studies/", "study", "study", False),
    Owned("/v1/models/", "models", "model", True),
    Owned("/v1/datasets/", "datasets", "dataset", True),
)
# query parameters that name a record on some routes (?baseline= on a job's compare)
QUERY_IDS = {"baseline": Owned("/v1/jobs/", "job", "job", False)}
OPS_ONLY = ("/v1/queue",)  # and /metrics (service.ops.metrics)


def forbidden(tenant: Tenant, what: str) -> ProblemError:
    return ProblemError(
        403,
        "forbidden",
        f"Authorization: tenant {tenant.name} ({tenant.role.value}) may not {what}",
    )


def owned_kind(template: str) -> Owned | None:
    return next((o for o in OWNED if template.startswith(o.prefix)), None)


def may_touch(owners: Owners, tenant: Tenant, kind: str, blob: bool, item_id: str) -> bool:
    """Whether a user-role tenant owns the record (or holds the upload)."""
    if blob:
        return owners.holds(kind, item_id, tenant.name)
    return owners.owner(kind, item_id) == tenant.name


def check_role(tenant: Tenant, method: str, template: str) -> None:
    """ops reads and cancels; users have no queue view; admin does everything."""
    if tenant.role == Role.ops and method not in READS and not template.endswith("/cancel"):
        raise forbidden(tenant, f"{method} {template}: ops reads and cancels, changes nothing else")
    if tenant.role == Role.user and template.startswith(OPS_ONLY):
        raise forbidden(tenant, f"read {template}: it is for ops and admin keys")


async def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """The route-level check: the role, then ownership of the `{id}` the path names."""
    del credentials  # read by the guard; declared here so the API documents the scheme
    tenant = await caller(request)
    route = request.scope.get("route")
    template = str(getattr(route, "path", request.url.path))
    check_role(tenant, request.method, template)
    if tenant.reads_all:
        return
    owners: Owners = request.app.state.owners
    item_id = request.path_params.get("id")
    if item_id is not None:
        owned = owned_kind(template)
        if owned is None or not may_touch(owners, tenant, owned.kind, owned.blob, str(item_id)):
            noun = owned.noun if owned else "record"
            raise ProblemError(404, "not-found", f"id: no {noun} {item_id}")
    for name, named in QUERY_IDS.items():
        value = request.query_params.get(name)
        if value and not may_touch(owners, tenant, named.kind, named.blob, value):
            raise ProblemError(404, "not-found", f"{name}: no {named.noun} {value}")

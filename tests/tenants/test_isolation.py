"""Every route of the API, tried across tenants against a real gateway and worker.

The routes come from the running gateway's OpenAPI schema, so a route added later is tried as
soon as it exists: a path with an `{id}` is tried with tenant a's record of the kind its prefix
names (a kind with no record here fails the test: add one to the fixture), and a route that
takes a body must have one below that names tenant a's records.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.tenants.conftest import TENANTS, Tenants, job_spec, trajectory_spec

pytestmark = pytest.mark.integration

KIND_OF_PREFIX = (  # longest first, as the gateway reads them
    ("/v1/trajectories/optimizer-states/", "state"),
    ("/v1/trajectories/", "trajectory"),
    ("/v1/jobs/", "job"),
    ("/v1/studies/", "study"),
    ("/v1/models/", "model"),
    ("/v1/datasets/", "dataset"),
)
UPLOADS = {"/v1/models": "model", "/v1/datasets": "dataset"}
UPLOADS["/v1/trajectories/optimizer-states"] = "state"
OPS_ONLY = {"/v1/queue"}
OPEN_TO_ALL = {"/v1/measures"}


def _routes(t: Tenants) -> list[tuple[str, str, dict[str, Any]]]:
    schema = t["root"].get("/openapi.json").json()
    return [
        (method.upper(), path, op)
        for path, ops in schema["paths"].items()
        if path.startswith("/v1")
        for method, op in ops.items()
    ]


def _kind(path: str) -> str:
    kind = next((k for prefix, k in KIND_OF_PREFIX if path.startswith(prefix)), None)
    assert kind, f"{path}: no record kind for this prefix; add one to KIND_OF_PREFIX"
    return kind


def _query(op: dict[str, Any], t: Tenants) -> dict[str, str]:
    """Values for the route's required query parameters, naming a's records."""
    values = {"baseline": t.owned["job"], "measure": "lambda_max"}
    query = {}
    for p in op.get("parameters", []):
        if p["in"] == "query" and p.get("required"):
            assert p["name"] in values, f"no value for required query {p['name']}"
            query[p["name"]] = values[p["name"]]
    return query


def _bodies(t: Tenants) -> dict[str, dict[str, Any]]:
    """A body per POST route without an id that names tenant a's records."""
    a = t.owned
    return {
        "/v1/jobs": job_spec(a["model"], a["dataset"]),
        "/v1/trajectories": trajectory_spec(a["model"], a["dataset"], a["state"]),
        "/v1/studies": {"name": "theirs", "jobs": [{"job": a["job"]}]},
    }


def _problem(r: Any) -> str:
    """The problem type's slug of a problem+json answer, else ''."""
    if "problem+json" not in r.headers.get("content-type", ""):
        return ""
    return str(r.json().get("type", "")).rsplit(":", 1)[-1]


def _call(t: Tenants, who: str, method: str, path: str, op: dict[str, Any]) -> Any:
    url = path.replace("{id}", t.owned[_kind(path)]) if "{id}" in path else path
    params = _query(op, t)
    if method == "POST" and path in UPLOADS:
        with t.files[UPLOADS[path]].open("rb") as fh:
            return t[who].post(url, files={"file": ("f", fh)}, params=params)
    if method == "POST" and "{id}" not in path:
        body = _bodies(t).get(path)
        assert body is not None, f"POST {path}: add a body naming a's records to _bodies"
        return t[who].post(url, json=body, params=params)
    return t[who].request(method, url, params=params)


def test_other_user_gets_404_on_every_id_route(tenants: Tenants) -> None:
    tried = 0
    for method, path, op in _routes(tenants):
        if "{id}" not in path:
            continue
        r = _call(tenants, "b", method, path, op)
        assert r.status_code == 404 and _problem(r) == "not-found", (method, path, r.text)
        tried += 1
    assert tried >= 10
    # a's records and uploads are all still there, as they were
    a = tenants.owned
    for path in (f"/v1/jobs/{a['job']}", f"/v1/models/{a['model']}", f"/v1/studies/{a['study']}"):
        assert tenants["a"].get(path).status_code == 200, path
    assert tenants["a"].get(f"/v1/jobs/{a['job']}").json()["status"] == "succeeded"


def test_other_user_cannot_use_or_list_anothers_records(tenants: Tenants) -> None:
    a = tenants.owned
    for method, path, op in _routes(tenants):
        if "{id}" in path or path in OPEN_TO_ALL or path in UPLOADS and method == "POST":
            continue
        r = _call(tenants, "b", method, path, op)
        if path in OPS_ONLY:
            assert r.status_code == 403 and _problem(r) == "forbidden", (path, r.text)
        elif method == "GET":
            assert r.status_code == 200, (path, r.text)
            assert not set(a.values()) & {i["id"] for i in r.json()["items"]}, (path, r.text)
        else:
            assert r.status_code in (404, 422), (path, r.text)
            assert _problem(r) in ("unknown", "not-found", "invalid-field"), (path, r.text)


def test_uploading_anothers_bytes_reveals_nothing(tenants: Tenants) -> None:
    """b uploads the bytes a holds: a fresh upload's answer under b's file name, listed for b;
    b's delete drops only b's hold."""
    for path, kind in UPLOADS.items():
        blob = tenants.owned[kind]
        with tenants.files[kind].open("rb") as fh:
            r = tenants["b"].post(path, files={"file": ("mine", fh)})
        assert r.status_code == 201, (path, r.text)
        assert r.json()["id"] == blob and r.json()["filename"] == "mine"
        read = path + "/" + blob
        assert tenants["b"].get(read).json()["filename"] == "mine"
        if kind != "state":  # optimizer states have no list or delete route
            listed = tenants["b"].get(path).json()["items"]
            assert [i["id"] for i in listed] == [blob]
            assert tenants["b"].delete(read).status_code == 204
            assert tenants["b"].get(read).status_code == 404
        assert tenants["a"].get(read).json()["filename"] != "mine"


def test_same_idempotency_key_does_not_replay_anothers_job(tenants: Tenants) -> None:
    a = tenants.owned
    headers = {"Idempotency-Key": "shared-key"}
    first = tenants["a"].post("/v1/jobs", json=job_spec(a["model"], a["dataset"]), headers=headers)
    assert first.status_code == 202
    other = tenants["b"].post("/v1/jobs", json=job_spec(a["model"], a["dataset"]), headers=headers)
    assert other.status_code == 422 and "model" in other.text


def test_ops_reads_everything_cancels_and_changes_nothing_else(tenants: Tenants) -> None:
    for method, path, op in _routes(tenants):
        r = _call(tenants, "ops", method, path, op)
        if method == "GET":
            assert r.status_code != 403 and _problem(r) != "not-found", (path, r.text)
        elif path.endswith("/cancel"):
            assert r.status_code in (200, 202, 409), (path, r.text)
        else:
            assert r.status_code == 403 and _problem(r) == "forbidden", (method, path, r.text)
    queue = tenants["ops"].get("/v1/queue")
    assert queue.status_code == 200
    assert set(queue.json()["active_by_tenant"]) == set(TENANTS)
    jobs = tenants["ops"].get("/v1/jobs", params={"limit": 200}).json()["items"]
    assert tenants.owned["job"] in {j["id"] for j in jobs}


def test_metrics_for_ops_and_admin_only(tenants: Tenants) -> None:
    assert tenants["a"].get("/metrics").status_code == 403
    body = tenants["ops"].get("/metrics")
    assert body.status_code == 200
    assert 'sharpness_tenant_runs{kind="job",status="queued",tenant="a"}' in body.text
    assert tenants["root"].get("/metrics").status_code == 200
    assert tenants["a"].get("/readyz").status_code in (200, 503)
    assert httpx.get(tenants.stack.url + "/metrics").status_code == 401


def test_cancel_records_who(tenants: Tenants) -> None:
    a = tenants.owned
    job = tenants["a"].post("/v1/jobs", json=job_spec(a["model"], a["dataset"])).json()
    r = tenants["ops"].post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code in (200, 202, 409), r.text
    if r.status_code != 409:
        assert r.json()["cancelled_by"] == "ops"  # the answer says who, and so does the record
        assert tenants["a"].get(f"/v1/jobs/{job['id']}").json()["cancelled_by"] == "ops"

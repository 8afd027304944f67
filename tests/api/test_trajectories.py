"""Trajectory submission, validation, reading, listing, cancellation and its picture's
problems (no worker runs: trajectories stay queued, their messages wait in Redis)."""

from __future__ import annotations

import redis
from fastapi.testclient import TestClient

from tasks.contract.spec import EigenvectorOverlap, JobStatus, TrajectoryPoint
from tasks.settings import Settings
from tasks.store.trajectories import TrajectoryStore
from tests.api.checks import assert_problem, assert_queued


def body(model: str, dataset: str, n: int = 3, **extra) -> dict:
    return {
        "checkpoints": [{"model": model, "learning_rate": 0.1, "step": 10 * i} for i in range(n)],
        "dataset": {"id": dataset, "batch_size": 8},
        **extra,
    }


def test_submit_read_list(
    client: TestClient, model_id: str, dataset_id: str, settings: Settings
) -> None:
    t = assert_queued(
        client, "/v1/trajectories", body(model_id, dataset_id, labels={"run": "a"}), settings
    )
    assert t["spec"]["k"] == 3
    assert len(t["progress"]) == 3 and t["points"] == [] and t["overlaps"] == []
    broker = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    assert "sharpness.run_trajectory" in broker.lindex("cpu", 0)

    other = client.post("/v1/trajectories", json=body(model_id, dataset_id, n=2)).json()
    page = client.get("/v1/trajectories", params={"limit": 1}).json()
    assert [i["id"] for i in page["items"]] == [other["id"]] and page["next_cursor"]
    rest = client.get("/v1/trajectories", params={"cursor": page["next_cursor"]}).json()
    assert [i["id"] for i in rest["items"]] == [t["id"]] and rest["next_cursor"] is None
    labelled = client.get("/v1/trajectories", params={"label": "run:a"}).json()
    assert [i["id"] for i in labelled["items"]] == [t["id"]]
    # trajectories are not jobs
    assert client.get("/v1/jobs").json()["items"] == []


def test_idempotency(client: TestClient, model_id: str, dataset_id: str) -> None:
    h = {"Idempotency-Key": "traj-1"}
    a = client.post("/v1/trajectories", json=body(model_id, dataset_id), headers=h)
    b = client.post("/v1/trajectories", json=body(model_id, dataset_id), headers=h)
    assert a.json()["id"] == b.json()["id"] and b.headers["idempotent-replayed"] == "true"
    c = client.post("/v1/trajectories", json=body(model_id, dataset_id, n=2), headers=h)
    assert_problem(c, 409, "different spec")


def test_validation_names_the_field(client: TestClient, model_id: str, dataset_id: str) -> None:
    bad = body(model_id, dataset_id)
    bad["checkpoints"][2]["model"] = "f" * 64
    p = assert_problem(client.post("/v1/trajectories", json=bad), 422, "checkpoints.2.model")
    assert p["errors"][0]["field"] == "checkpoints.2.model"
    assert_problem(
        client.post("/v1/trajectories", json=body(model_id, dataset_id, n=1)),
        422,
        "checkpoints",
    )
    assert_problem(client.post("/v1/trajectories", json=body(model_id, dataset_id, k=21)), 422, "k")
    lr0 = body(model_id, dataset_id)
    lr0["checkpoints"][1]["learning_rate"] = 0
    assert_problem(client.post("/v1/trajectories", json=lr0), 422, "checkpoints.1.learning_rate")
    backwards = body(model_id, dataset_id)
    backwards["checkpoints"][2]["step"] = 5
    assert_problem(client.post("/v1/trajectories", json=backwards), 422, "checkpoints[2].step")
    no_data = body(model_id, "e" * 64)
    assert_problem(client.post("/v1/trajectories", json=no_data), 422, "dataset.id")


def test_cancel(client: TestClient, model_id: str, dataset_id: str, settings: Settings) -> None:
    store = TrajectoryStore(redis.Redis.from_url(settings.redis_url, decode_responses=True))
    t = client.post("/v1/trajectories", json=body(model_id, dataset_id)).json()
    r = client.post(f"/v1/trajectories/{t['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    running = client.post("/v1/trajectories", json=body(model_id, dataset_id)).json()
    store.acquire(running["id"], "w1", 30)  # a live worker holds the run lock
    store.mark_running(running["id"], "w1", "cpu", {})
    r = client.post(f"/v1/trajectories/{running['id']}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    # running, but its worker is gone (no lock, no heartbeat): cancelled at once, as a job is
    orphan = client.post("/v1/trajectories", json=body(model_id, dataset_id)).json()
    store.mark_running(orphan["id"], "dead-worker", "cpu", {})
    r = client.post(f"/v1/trajectories/{orphan['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert [a["outcome"] for a in r.json()["attempt_history"]] == ["worker-lost"]
    done = client.post("/v1/trajectories", json=body(model_id, dataset_id)).json()
    store.finish(done["id"], JobStatus.succeeded)
    assert_problem(client.post(f"/v1/trajectories/{done['id']}/cancel"), 409, "succeeded")
    assert_problem(client.get(f"/v1/trajectories/{'a' * 32}"), 404, "no trajectory")


def point(i: int, ratio: float) -> TrajectoryPoint:
    return TrajectoryPoint(
        index=i,
        model="0" * 64,
        step=10 * i,
        learning_rate=0.1,
        lambda_max=20 * ratio,
        eigenvalues=[20 * ratio, 1.0, 0.5],
        stability_ratio=ratio,
        beyond_edge=ratio > 1,
        residual_bounds=[0.0, 0.0, 0.0],
        converged=True,
        iterations=10,
        hvps=10,
        seconds=0.1,
        dim=59,
    )


def test_plot_png(client: TestClient, model_id: str, dataset_id: str, settings: Settings) -> None:
    store = TrajectoryStore(redis.Redis.from_url(settings.redis_url, decode_responses=True))
    t = client.post("/v1/trajectories", json=body(model_id, dataset_id)).json()
    png = f"/v1/trajectories/{t['id']}/plot.png"
    assert_problem(client.get(png), 409, "queued")
    store.mark_running(t["id"], "w1", "cpu", {})
    store.add_point(t["id"], point(0, 0.8), None)
    overlap = EigenvectorOverlap(
        start=0, end=1, top_overlap=0.6, subspace_overlap=0.8, principal_cosines=[1, 0.9, 0.5]
    )
    store.add_point(t["id"], point(1, 1.3), overlap)
    r = client.get(png)  # partial: two of three checkpoints
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
    got = client.get(f"/v1/trajectories/{t['id']}").json()
    assert [p["index"] for p in got["points"]] == [0, 1]
    assert got["overlaps"][0]["subspace_overlap"] == 0.8

    empty = client.post("/v1/trajectories", json=body(model_id, dataset_id)).json()
    client.post(f"/v1/trajectories/{empty['id']}/cancel")
    assert_problem(client.get(f"/v1/trajectories/{empty['id']}/plot.png"), 404, "cancelled")
    assert_problem(client.get(f"/v1/trajectories/{'a' * 32}/plot.png"), 404)

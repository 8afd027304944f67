"""Per-status indexes: every status change moves the record between the index sets in the same
transaction, the ops views and status-filtered listing read them (a constant number of Redis
commands whatever the number of records), and records written before the indexes existed
are indexed once."""

from __future__ import annotations

import time

import redis
from fastapi.testclient import TestClient

from tasks.contract.spec import JobSpec, JobStatus, TrajectorySpec
from tasks.settings import Settings
from tasks.store.records import JobStore
from tasks.store.trajectories import TrajectoryStore


def _spec(**labels: str) -> JobSpec:
    return JobSpec.model_validate(
        {
            "model": "a" * 64,
            "dataset": {"id": "d" * 64},
            "measures": [{"name": "lambda_max"}],
            "labels": labels,
        }
    )


def _store(settings: Settings) -> JobStore:
    return JobStore.from_url(settings.redis_url)


def _where(store: JobStore | TrajectoryStore, record_id: str) -> set[str]:
    """The index sets that hold `record_id` (status sets, per-queue queued sets, ended)."""
    r = store.r
    found = {s.value for s in JobStatus if r.zscore(store.status_key(s), record_id) is not None}
    found |= {f"queued:{q}" for q in ("cpu", "gpu") if r.zscore(store.queued_key(q), record_id)}
    if r.zscore(store.ended_key(), record_id) is not None:
        found.add("ended")
    return found


def test_every_transition_moves_the_record(settings: Settings) -> None:
    store = _store(settings)
    job = store.create(_spec(), "cpu")
    assert _where(store, job.id) == {"queued", "queued:cpu"}
    attempt = store.mark_running(job.id, "w1", "cpu", {})
    assert _where(store, job.id) == {"running"}
    assert store.running_ids() == [job.id]
    # the worker is lost: back to queued on the same queue
    assert store.end_run(job.id, "worker-lost", attempt=attempt) == JobStatus.queued
    assert _where(store, job.id) == {"queued", "queued:cpu"}
    attempt = store.mark_running(job.id, "w2", "cpu", {})
    assert store.finish(job.id, JobStatus.succeeded, results={}, attempt=attempt)
    assert _where(store, job.id) == {"succeeded", "ended"}
    assert store.running_ids() == []
    assert not store.finish(job.id, JobStatus.failed)  # never leaves a terminal state
    assert _where(store, job.id) == {"succeeded", "ended"}

    cancelled = store.create(_spec(), "gpu")
    assert _where(store, cancelled.id) == {"queued", "queued:gpu"}
    store.request_cancel(cancelled.id)
    assert _where(store, cancelled.id) == {"cancelled", "ended"}

    failed = store.create(_spec(), "cpu")
    attempt = store.mark_running(failed.id, "w1", "cpu", {})
    assert store.end_run(failed.id, "worker-lost", attempt=attempt, max_attempts=1)
    assert _where(store, failed.id) == {"failed", "ended"}

    store.delete(failed.id)
    assert _where(store, failed.id) == set()
    view = store.view(("gpu", "cpu"))
    assert view.by_status == {
        "queued": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 0,
        "cancelled": 1,
    }


def test_trajectories_have_their_own_indexes(settings: Settings) -> None:
    jobs, trajectories = _store(settings), TrajectoryStore(_store(settings).r)
    spec = TrajectorySpec.model_validate(
        {
            "checkpoints": [{"model": m * 64, "learning_rate": 0.1} for m in "bc"],
            "dataset": {"id": "d" * 64},
        }
    )
    t = trajectories.create(spec, "cpu")
    jobs.create(_spec(), "cpu")
    assert _where(trajectories, t.id) == {"queued", "queued:cpu"}
    trajectories.mark_running(t.id, "w1", "cpu", {})
    view = trajectories.view(("gpu", "cpu"))
    assert view.by_status["running"] == 1 and view.queued == {"gpu": 0, "cpu": 0}
    assert [(r.id, r.kind, r.worker) for r in view.running] == [(t.id, "trajectory", "w1")]
    assert jobs.view(("gpu", "cpu")).queued == {"gpu": 0, "cpu": 1}


def test_status_filtered_listing_pages_through_the_index(
    client: TestClient, settings: Settings
) -> None:
    store = _store(settings)
    ids = [store.create(_spec(n=str(i)), "cpu").id for i in range(7)]  # oldest first
    for record_id in ids[1::2]:  # 1, 3, 5 succeed
        store.mark_running(record_id, "w", "cpu", {})
        store.finish(record_id, JobStatus.succeeded, results={})
    pages, cursor = [], None
    while True:
        params = {"status": "queued", "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = client.get("/v1/jobs", params=params).json()
        pages.append([j["id"] for j in body["items"]])
        assert all(j["status"] == "queued" for j in body["items"])
        if not (cursor := body["next_cursor"]):
            break
    assert pages == [[ids[6], ids[4]], [ids[2], ids[0]]]
    done = client.get("/v1/jobs", params={"status": "succeeded"}).json()
    assert [j["id"] for j in done["items"]] == [ids[5], ids[3], ids[1]]
    # a cursor whose record changed status since still places the next page by its age
    store.mark_running(ids[4], "w", "cpu", {})
    body = client.get("/v1/jobs", params={"status": "queued", "cursor": ids[4]}).json()
    assert [j["id"] for j in body["items"]] == [ids[2], ids[0]]
    labelled = client.get("/v1/jobs", params={"status": "queued", "label": "n:2"}).json()
    assert [j["id"] for j in labelled["items"]] == [ids[2]]


def test_queue_depth_excludes_cancelled_jobs(
    client: TestClient, model_id: str, dataset_id: str
) -> None:
    spec = {
        "model": model_id,
        "dataset": {"id": dataset_id},
        "measures": [{"name": "lambda_max"}],
        "device": "cpu",
    }
    ids = [client.post("/v1/jobs", json=spec).json()["id"] for _ in range(3)]
    assert client.post(f"/v1/jobs/{ids[0]}/cancel").json()["status"] == "cancelled"
    body = client.get("/v1/queue").json()
    cpu = next(q for q in body["queues"] if q["name"] == "cpu")
    assert cpu["queued_jobs"] == 2  # the records that will run
    assert cpu["waiting"] == 3  # the broker still holds the cancelled job's message
    assert body["jobs_by_status"]["cancelled"] == 1 and body["jobs_by_status"]["queued"] == 2
    assert 'sharpness_queue_depth{kind="job",queue="cpu"} 2.0' in client.get("/metrics").text


def _commands(r: redis.Redis) -> dict[str, int]:
    stats = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}


def _cost(client: TestClient, r: redis.Redis, path: str) -> dict[str, int]:
    """The Redis commands one GET of `path` sends, by name (the test client is the only
    client of this server's commands while it runs)."""
    deadline = time.monotonic() + 30  # the app's start-up rebuild has ended (a quiet server)
    while r.get(JobStore._indexed_key()) is None or r.exists(JobStore._indexing_key()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    client.get(path)  # warm: the index marker, the prune, the reaper's worklist
    before = _commands(r)
    assert client.get(path).status_code == 200
    after = _commands(r)
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}


def test_ops_views_cost_the_same_at_10_and_2000_records(
    client: TestClient, settings: Settings
) -> None:
    store = _store(settings)
    store.heartbeat("w1", "cpu")

    def add(n: int) -> None:
        for i in range(n):
            job = store.create(_spec(), "cpu" if i % 2 else "gpu")
            if i % 3 == 0:
                store.mark_running(job.id, "w1", "cpu", {})
                store.finish(job.id, JobStatus.succeeded, results={})

    add(10)
    small = {p: _cost(client, store.r, p) for p in ("/v1/queue", "/metrics")}
    add(1990)
    large = {p: _cost(client, store.r, p) for p in ("/v1/queue", "/metrics")}
    assert small == large
    for cost in large.values():
        assert "scan" not in cost and "keys" not in cost
    listing = _cost(client, store.r, "/v1/jobs?status=queued&limit=5")
    assert listing.get("hgetall", 0) == 5  # the page, not every record


def test_records_written_before_the_indexes_are_indexed_once(settings: Settings) -> None:
    store = _store(settings)
    queued = store.create(_spec(), "gpu")
    running = store.create(_spec(), "cpu")
    store.mark_running(running.id, "w1", "cpu", {})
    done = store.create(_spec(), "cpu")
    store.finish(done.id, JobStatus.failed)
    # as a store without indexes left them: only the hashes and the creation-time index
    index_keys = [store.status_key(s) for s in JobStatus]
    index_keys += [store.queued_key(q) for q in ("cpu", "gpu")]
    store.r.delete(*index_keys, store.ended_key(), store._indexed_key(), store.running_key())
    store.r.persist(store.key(done.id))
    view = store.view(("gpu", "cpu"))  # no marker: the view rebuilds them first
    assert view.by_status == {
        "queued": 1,
        "running": 1,
        "succeeded": 0,
        "failed": 1,
        "cancelled": 0,
    }

    store.r.delete(*index_keys, store.ended_key(), store._indexed_key())
    store.r.set(store._indexing_key(), 1)  # another gateway is rebuilding: do not wait
    assert store.ensure_indexes() is False
    store.r.delete(store._indexing_key())
    assert store.ensure_indexes() is True
    assert store.ensure_indexes() is True  # idempotent: the marker says done
    assert _where(store, queued.id) == {"queued", "queued:gpu"}
    assert _where(store, running.id) == {"running"}
    assert _where(store, done.id) == {"failed", "ended"}
    assert store.running_ids() == [running.id]
    assert 0 < store.r.pttl(store.key(done.id)) <= store.retention_s * 1000  # retention too
    assert store.r.pttl(store.key(queued.id)) == -1
    view = store.view(("gpu", "cpu"))
    assert view.queued == {"gpu": 1, "cpu": 0} and view.by_status["failed"] == 1


def test_the_gateway_builds_missing_indexes_at_start(settings: Settings) -> None:
    """The rebuild runs in the app's start-up, not in the first request that needs it."""
    from fastapi.testclient import TestClient

    from service.main import create_app

    store = _store(settings)
    queued = store.create(_spec(), "cpu")
    index_keys = [store.status_key(s) for s in JobStatus] + [store.queued_key("cpu")]
    store.r.delete(*index_keys, store._indexed_key())
    with TestClient(create_app(settings)):  # runs the lifespan; no request is made
        deadline = time.monotonic() + 30
        while store.r.get(store._indexed_key()) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert _where(store, queued.id) == {"queued", "queued:cpu"}


def test_a_rebuild_keeps_the_expiry_its_ender_set(settings: Settings) -> None:
    """A record ended by a worker with a short retention keeps that expiry through a rebuild
    by a gateway with a long one (the rebuild may run while workers end records)."""
    worker = _store(settings)
    worker.retention_s = 60
    job = worker.create(_spec(), "cpu")
    worker.finish(job.id, JobStatus.cancelled)
    gateway = _store(settings)
    assert gateway.retention_s > 86_400
    gateway.r.delete(gateway._indexed_key(), gateway.ended_key())
    assert gateway.ensure_indexes()
    assert 0 < gateway.r.pttl(gateway.key(job.id)) <= 60_000
    assert gateway.r.zscore(gateway.ended_key(), job.id) <= time.time() + 60


def test_label_listing_reads_the_labelled_records_not_every_record(
    client: TestClient, settings: Settings
) -> None:
    """`?label=` walks the rarest filter's index: the Redis reads follow the matching records
    (5 here), whatever else the store holds (10 or 2,000 others)."""
    store = _store(settings)
    mine = [store.create(_spec(team="vision", run=str(i)), "cpu").id for i in range(5)]
    store.finish(mine[0], JobStatus.failed)

    def add(n: int) -> None:
        for i in range(n):
            store.create(_spec(team="nlp", run=str(i)), "cpu")

    def listing(query: str) -> tuple[list[str], dict[str, int]]:
        cost = _cost(client, store.r, f"/v1/jobs?{query}")
        return [j["id"] for j in client.get(f"/v1/jobs?{query}").json()["items"]], cost

    add(10)
    small_ids, small = listing("label=team:vision&limit=50")
    add(1990)
    large_ids, large = listing("label=team:vision&limit=50")
    assert small_ids == large_ids == mine[::-1]
    assert small == large and large["hgetall"] == 5
    # two filters: the rarer one is walked, the other checked on the records read
    ids, cost = listing("label=team:nlp&label=run:3&limit=50")
    assert len(ids) == 2 and cost["hgetall"] == 3  # run:3: two nlp records, one vision
    ids, cost = listing("label=team:vision&status=failed")
    assert ids == [mine[0]] and cost["hgetall"] == 1
    # pages follow the cursor through the label's index
    first = client.get("/v1/jobs?label=team:vision&limit=2").json()
    second = client.get(f"/v1/jobs?label=team:vision&limit=2&cursor={first['next_cursor']}")
    assert [j["id"] for j in first["items"] + second.json()["items"]] == mine[::-1][:4]


def test_label_indexes_are_dropped_with_their_records(settings: Settings) -> None:
    store = _store(settings)
    store.retention_s = 0.5
    job = store.create(_spec(team="vision"), "cpu")
    kept = store.create(_spec(team="vision"), "cpu")
    key = store.label_key("team", "vision")
    assert store.r.zcard(key) == 2 and store.r.hexists(store.labels_key(), job.id)
    store.finish(job.id, JobStatus.cancelled)
    deadline = time.monotonic() + 10
    while store.r.exists(store.key(job.id)):  # Redis expires the hash first
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.1)
    assert store.prune() == 1  # then the prune drops it from the label index too
    assert store.r.zrange(key, 0, -1) == [kept.id]
    assert not store.r.hexists(store.labels_key(), job.id)
    store.delete(kept.id)
    assert not store.r.exists(key) and not store.r.exists(store.labels_key())


def test_a_rebuild_indexes_labels_of_older_records(settings: Settings) -> None:
    store = _store(settings)
    job = store.create(_spec(team="vision", split="a=b"), "cpu")
    other = store.create(_spec(team="vision=split", split="b"), "cpu")  # no key clash
    assert store.ensure_indexes()
    store.r.delete(
        store.labels_key(), store.label_key("team", "vision"), store.label_key("split", "a=b")
    )
    assert store.page(labels={"team": "vision"})[0] == []  # not yet rebuilt: marker here
    store.r.delete(store._indexed_key())
    assert [j.id for j in store.page(labels={"team": "vision"})[0]] == [job.id]
    assert [j.id for j in store.page(labels={"split": "a=b"})[0]] == [job.id]
    assert [j.id for j in store.page(labels={"team": "vision=split"})[0]] == [other.id]

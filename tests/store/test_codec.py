"""The stored forms of records and the key layout are the service's data format: records
written before must read back, and new writes must look exactly like the old ones."""

from __future__ import annotations

from datetime import UTC, datetime

import redis

from tasks.contract.spec import JobStatus, MeasureProgress, Problem
from tasks.store import codec, keys
from tasks.store.idempotency import IdempotencyKeys

PROGRESS = '{"state":"pending","iteration":0,"estimate":null,"updated_at":null}'
ERROR = (
    '{"type":"urn:sharpness:problem:worker-lost","title":"lost","status":500,'
    '"detail":"gone","instance":null,"errors":null}'
)
# a job hash as the store has always written it (without the spec, added below)
STORED = {
    "status": "failed",
    "queue": "cpu",
    "created_at": "2026-01-01T00:00:52.500000+00:00",
    "started_at": "2026-01-01T00:01:00+00:00",
    "finished_at": "2026-01-01T00:01:07.500000+00:00",
    "worker": "w3",
    "device": "cpu",
    "versions": '{"torch": "2"}',
    "attempts": "1",
    "epoch": "2",
    "cancel_requested": "0",
    "attempt_log": '[{"attempt": 1, "worker": "w3", "started_at": "2026-01-01T00:01:00+00:00", '
    '"ended_at": "2026-01-01T00:01:07.500000+00:00", "outcome": "worker-lost"}]',
    "error": ERROR,
    "results": '{"trace": {"value": 2.5}}',
    "evaluation": '{"loss": 1.0, "when": "2026-01-01 00:00:00+00:00"}',
    "progress:trace": PROGRESS,
}
SPEC = (
    '{"model":"' + "a" * 64 + '","dataset":{"id":"' + "b" * 64 + '"},'
    '"measures":[{"name":"trace"}],"labels":{"team":"x"}}'
)


def test_a_stored_job_reads_back() -> None:
    fields = codec.JOB.decode("j1", {**STORED, "spec": SPEC})
    assert fields["id"] == "j1" and fields["status"] is JobStatus.failed
    assert fields["created_at"] == datetime(2026, 1, 1, 0, 0, 52, 500000, tzinfo=UTC)
    assert fields["attempt_history"][0]["outcome"] == "worker-lost"
    assert fields["error"].type.endswith("worker-lost") and fields["cancel_requested"] is False
    assert fields["progress"] == {"trace": MeasureProgress()}
    assert fields["results"]["trace"].value == 2.5
    assert fields["spec"].labels == {"team": "x"}


def test_absent_fields_read_as_their_defaults() -> None:
    raw = {"status": "queued", "created_at": STORED["created_at"], "spec": SPEC}
    fields = codec.JOB.decode("j2", raw)
    assert fields["queue"] == "cpu" and fields["attempts"] == 0 and fields["versions"] == {}
    assert fields["worker"] is None and fields["started_at"] is None
    assert fields["attempt_history"] == [] and fields["results"] == {}


def test_writes_are_stored_as_before() -> None:
    at = datetime(2026, 1, 1, 0, 1, 7, 500000, tzinfo=UTC)
    error = Problem.model_validate_json(ERROR)
    out = codec.JOB.encode(
        status=JobStatus.failed,
        finished_at=at,
        versions={"torch": "2"},
        error=error,
        cancel_requested=False,
        evaluation={"loss": 1.0, "when": datetime(2026, 1, 1, tzinfo=UTC)},
    )
    assert out == {
        "status": "failed",
        "finished_at": STORED["finished_at"],
        "versions": STORED["versions"],
        "error": ERROR,
        "cancel_requested": "0",
        "evaluation": STORED["evaluation"],
    }
    assert codec.JOB.prefixed_field("progress", "trace", MeasureProgress()) == (
        "progress:trace",
        PROGRESS,
    )
    assert codec.TRAJECTORY.encode(points=[], overlaps=[]) == {"points": "[]", "overlaps": "[]"}


def test_a_progress_bound_is_stored_only_when_there_is_one() -> None:
    name, stored = codec.JOB.prefixed_field("progress", "lambda_max", MeasureProgress(bound=0.5))
    assert stored == PROGRESS.replace('"updated_at"', '"bound":0.5,"updated_at"')
    fields = codec.JOB.decode("j3", {**STORED, name: stored, "spec": SPEC})
    assert fields["progress"]["lambda_max"].bound == 0.5
    assert fields["progress"]["trace"].bound is None  # written before there was a bound


def test_the_key_layout_is_unchanged() -> None:
    assert keys.JOBS.record("i") == "sharpness:job:i"
    assert keys.TRAJECTORIES.record("i") == "sharpness:trajectory:i"
    assert keys.JOBS.status("queued") == "sharpness:jobs:status:queued"
    assert keys.TRAJECTORIES.queued("gpu") == "sharpness:trajectories:queued:gpu"
    assert keys.JOBS.label("k", "v") == 'sharpness:jobs:label:["k","v"]'
    assert keys.JOBS.idem == "sharpness:idem:"
    assert keys.TRAJECTORIES.idem == "sharpness:idem:trajectory:"
    assert keys.JOBS.running() == "sharpness:running:job"
    assert keys.JOBS.indexed() == "sharpness:indexed:job"
    assert keys.lock_key("i") == "sharpness:lock:i"
    assert keys.enqueued_key("i") == "sharpness:enqueued:i"
    assert keys.worker_key("h") == "sharpness:workers:h"
    assert keys.STUDIES.study("s") == "sharpness:study:s"
    assert keys.STUDIES.job("j") == "sharpness:study:job:j"
    assert keys.STUDIES.idem == "sharpness:study:idem:"
    assert keys.queue_lists("cpu") == ("cpu", "cpu\x06\x163", "cpu\x06\x166", "cpu\x06\x169")


def test_an_idempotency_key_names_the_first_id_for_a_day(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    idem = IdempotencyKeys(r, keys.STUDIES.idem)
    assert idem.claim("k-store-test", "first")
    assert not idem.claim("k-store-test", "second")
    assert idem.holder("k-store-test") == "first"
    assert 86_000 < r.ttl("sharpness:study:idem:k-store-test") <= 86_400
    idem.release("k-store-test", "second")  # not its id: kept
    assert idem.holder("k-store-test") == "first"
    idem.release("k-store-test", "first")
    assert idem.holder("k-store-test") is None

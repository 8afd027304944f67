"""The SDK sends dropout_seed when it is given, and only then."""

from __future__ import annotations

import json

from sharpness_client import Client
from sharpness_client._spec import build_spec
from tests.sdk.scripted_server import Reply, scripted

M, D = "a" * 64, "b" * 64


def test_build_spec_sets_it_only_when_given() -> None:
    spec = build_spec(M, D, ["lambda_max"], mode="train", dropout_seed=9)
    assert spec.dropout_seed == 9 and "dropout_seed" in spec.model_fields_set
    assert "dropout_seed" not in build_spec(M, D, ["lambda_max"]).model_fields_set


def test_jobs_create_sends_it() -> None:
    job = {
        "id": "0" * 32,
        "status": "queued",
        "queue": "cpu",
        "created_at": "2026-01-01T00:00:00Z",
        "spec": {"model": M, "dataset": {"id": D}, "measures": [{"name": "lambda_max"}]},
    }
    with scripted([Reply(202, job)]) as server, Client(server.url, max_retries=0) as client:
        client.jobs.create(
            model=M, dataset=D, measures=["lambda_max"], mode="train", dropout_seed=3
        )
    [seen] = server.seen
    assert json.loads(seen.body)["dropout_seed"] == 3

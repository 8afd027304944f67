"""The job field dropout_seed: accepted and echoed in the spec, refused with a 422 naming it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.checks import assert_problem


def body(model: str, dataset: str, **extra) -> dict:
    return {
        "model": model,
        "dataset": {"id": dataset, "batch_size": 8},
        "measures": [{"name": "lambda_max"}, {"name": "top_eigenvalues", "params": {"k": 3}}],
        "mode": "train",
        **extra,
    }


def test_accepted_and_kept_in_the_spec(client: TestClient, model_id: str, dataset_id: str) -> None:
    r = client.post("/v1/jobs", json=body(model_id, dataset_id, dropout_seed=42))
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["dropout_seed"] == 42
    assert client.get(r.headers["location"]).json()["spec"]["dropout_seed"] == 42
    r = client.post("/v1/jobs", json=body(model_id, dataset_id))
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["dropout_seed"] == 0  # the default


@pytest.mark.parametrize("bad", [-1, 2**63, 1.5, "seven", None])
def test_bad_seeds_are_refused_naming_the_field(
    client: TestClient, model_id: str, dataset_id: str, bad: object
) -> None:
    r = client.post("/v1/jobs", json=body(model_id, dataset_id, dropout_seed=bad))
    problem = assert_problem(r, 422, "dropout_seed")
    assert problem["errors"][0]["field"] == "dropout_seed"

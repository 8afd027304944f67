"""The job field precision: accepted and kept in the spec ("auto" by default), anything else
refused with a 422 naming it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.checks import assert_problem


def body(model: str, dataset: str, **extra) -> dict:
    return {
        "model": model,
        "dataset": {"id": dataset, "batch_size": 8},
        "measures": [{"name": "lambda_max"}],
        **extra,
    }


@pytest.mark.parametrize("precision", ["auto", "model", "float32", "float64"])
def test_accepted_and_kept_in_the_spec(
    client: TestClient, model_id: str, dataset_id: str, precision: str
) -> None:
    r = client.post("/v1/jobs", json=body(model_id, dataset_id, precision=precision))
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["precision"] == precision
    assert client.get(r.headers["location"]).json()["spec"]["precision"] == precision


def test_auto_by_default(client: TestClient, model_id: str, dataset_id: str) -> None:
    r = client.post("/v1/jobs", json=body(model_id, dataset_id))
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["precision"] == "auto"


@pytest.mark.parametrize("bad", ["bfloat16", "half", "FLOAT32", "", 32, None])
def test_bad_values_are_refused_naming_the_field(
    client: TestClient, model_id: str, dataset_id: str, bad: object
) -> None:
    r = client.post("/v1/jobs", json=body(model_id, dataset_id, precision=bad))
    problem = assert_problem(r, 422, "precision")
    assert problem["errors"][0]["field"] == "precision"

"""A job's held-out dataset and initial model are checked at submission like its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from tests.api import files
from tests.api.checks import assert_problem

MISSING = "0" * 64


def spec(model: str, dataset: str, **extra) -> dict:
    return {
        "model": model,
        "dataset": {"id": dataset},
        "measures": [{"name": "weight_norms"}, {"name": "pacbayes_flatness"}],
        **extra,
    }


def test_job_with_eval_dataset_and_initial_model(
    client: TestClient, model_id: str, dataset_id: str
) -> None:
    body = spec(model_id, dataset_id, eval_dataset={"id": dataset_id}, initial_model=model_id)
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["spec"]["eval_dataset"]["id"] == dataset_id
    assert job["spec"]["initial_model"] == model_id
    assert job["spec"]["measures"][1]["params"]["target_drop"] == 0.1


def test_unknown_eval_dataset_and_initial_model(
    client: TestClient, model_id: str, dataset_id: str
) -> None:
    r = client.post("/v1/jobs", json=spec(model_id, dataset_id, eval_dataset={"id": MISSING}))
    body = assert_problem(r, 422, "eval_dataset.id:", "POST /v1/datasets")
    assert body["errors"][0]["field"] == "eval_dataset.id"
    r = client.post("/v1/jobs", json=spec(model_id, dataset_id, initial_model=MISSING))
    body = assert_problem(r, 422, "initial_model:", "POST /v1/models")
    assert body["errors"][0]["field"] == "initial_model"


def test_eval_dataset_keys_and_uri_checked(
    client: TestClient, model_id: str, dataset_id: str, data_root: Path
) -> None:
    ref = {"id": dataset_id, "targets_key": "labels"}
    r = client.post("/v1/jobs", json=spec(model_id, dataset_id, eval_dataset=ref))
    assert_problem(r, 422, "eval_dataset.targets_key", "'labels'")
    (data_root / "bad.npz").write_bytes(files.npz_bytes(inputs=np.zeros((2, 4), np.float32)))
    ref = {"uri": (data_root / "bad.npz").as_uri()}
    r = client.post("/v1/jobs", json=spec(model_id, dataset_id, eval_dataset=ref))
    assert_problem(r, 422, "eval_dataset.uri", "'targets'")
    r = client.post("/v1/jobs", json=spec(model_id, dataset_id, eval_dataset={"uri": "ftp://x/d"}))
    assert_problem(r, 422, "eval_dataset.uri", "scheme 'ftp'")


def test_new_measures_parameters_are_bounded(
    client: TestClient, model_id: str, dataset_id: str
) -> None:
    body = spec(model_id, dataset_id)
    body["measures"] = [{"name": "pacbayes_flatness", "params": {"target_drop": 1.5}}]
    assert_problem(client.post("/v1/jobs", json=body), 422, "measures.0.params.target_drop")
    body["measures"] = [{"name": "pacbayes_bound", "params": {"sigma_min": 2, "sigma_max": 1}}]
    assert_problem(client.post("/v1/jobs", json=body), 422, "sigma_min")
    names = [m["name"] for m in client.get("/v1/measures").json()]
    assert {"pacbayes_flatness", "pacbayes_mag_flatness", "pacbayes_bound"} <= set(names)
    assert {"weight_norms", "output_margin"} <= set(names)

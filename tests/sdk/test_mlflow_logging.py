"""`log_to_mlflow`: a finished job (from a real service) and a trajectory record logged to a
real local MLflow tracking store (the file backend in a temporary folder), read back with
MlflowClient.get_run: values and intervals as metrics, measure parameters as params, the job
id and service URL as tags, the spectral density PNG as an artifact."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sharpness_client import Client, log_to_mlflow
from sharpness_client.types import Trajectory
from tests.sdk import models as M

mlflow = pytest.importorskip("mlflow")

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A local file store as the tracking URI (no server), for this test only."""
    uri = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


@pytest.mark.integration
def test_job_logged_and_read_back(service_url: str, store: str, tmp_path: Path) -> None:
    x, y = M.data(n=32, seed=1)
    with Client() as client:
        job = client.measure(
            M.mlp(seed=2),
            (x, y),
            measures=["lambda_max", "trace", "spectral_density"],
            params={"trace": {"num_hvps": 40}},
            device="cpu",
            timeout=120,
        )
        with mlflow.start_run() as active:
            run_id = log_to_mlflow(job, client)
    assert run_id == active.info.run_id
    run = mlflow.MlflowClient(store).get_run(run_id)
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    assert metrics["sharpness.lambda_max"] == job.results["lambda_max"].value
    error = job.results["lambda_max"].diagnostics["error_estimate"]
    assert metrics["sharpness.lambda_max.error_estimate"] == error
    low, high = job.results["trace"].diagnostics["ci95"]
    assert (metrics["sharpness.trace.low"], metrics["sharpness.trace.high"]) == (low, high)
    assert params["sharpness.trace.num_hvps"] == "40"
    assert params["sharpness.lambda_max.max_iter"] == "300"
    assert params["sharpness.model"] == job.spec.model
    assert tags["sharpness.job_id"] == job.id and tags["sharpness.url"] == service_url
    artifacts = mlflow.MlflowClient(store).list_artifacts(run_id, "sharpness")
    assert [a.path for a in artifacts] == ["sharpness/spectral_density.png"]
    local = mlflow.MlflowClient(store).download_artifacts(run_id, artifacts[0].path, str(tmp_path))
    assert Path(local).read_bytes()[:8] == PNG


def trajectory() -> Trajectory:
    point = {
        "model": "a" * 64,
        "learning_rate": 0.1,
        "eigenvalues": [4.0],
        "stability_ratio": 0.2,
        "beyond_edge": False,
        "residual_bounds": [0.0],
        "converged": True,
        "iterations": 10,
        "hvps": 10,
        "seconds": 0.1,
        "dim": 20,
    }
    return Trajectory.model_validate(
        {
            "id": "1" * 32,
            "status": "succeeded",
            "queue": "cpu",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "spec": {
                "checkpoints": [
                    {"model": "a" * 64, "step": 10, "learning_rate": 0.1},
                    {"model": "b" * 64, "step": 20, "learning_rate": 0.1},
                ],
                "dataset": {"id": "c" * 64},
                "max_iter": 50,
            },
            "points": [
                {**point, "index": 0, "step": 10, "lambda_max": 4.0, "loss": 1.5},
                {**point, "index": 1, "step": 20, "lambda_max": 6.0, "loss": 1.0},
            ],
        }
    )


def test_trajectory_logged_per_step(store: str) -> None:
    with mlflow.start_run() as active:
        log_to_mlflow(trajectory())
    client = mlflow.MlflowClient(store)
    history = client.get_metric_history(active.info.run_id, "sharpness.trajectory.lambda_max")
    assert [(m.step, m.value) for m in history] == [(10, 4.0), (20, 6.0)]
    run = client.get_run(active.info.run_id)
    assert run.data.tags["sharpness.trajectory_id"] == "1" * 32
    assert run.data.params["sharpness.trajectory.max_iter"] == "50"
    assert "sharpness.url" not in run.data.tags  # no client: no service named


def test_without_mlflow_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"sharpness-client\[mlflow\]"):
        log_to_mlflow(trajectory())

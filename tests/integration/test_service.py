"""End to end over HTTP: uploads, jobs, exact λmax, bad inputs, cancellation, redelivery."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.app import RUN_JOB_TASK, make_celery
from tasks.settings import Settings
from tests import artifacts as A
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


def dense_lambda_max(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    from tasks.engine.problem import HessianProblem
    from tests.engine.reference import dense_hessian

    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y)
    batches = [(xt[i : i + batch], yt[i : i + batch]) for i in range(0, len(xt), batch)]
    problem = HessianProblem(model.double().eval(), batches, loss="cross_entropy")
    return float(torch.linalg.eigvalsh(dense_hessian(problem)).max())


def test_lambda_max_agrees_with_dense_hessian(stack: Stack, tmp_path: Path) -> None:
    model = A.mlp(in_features=4, hidden=8, out=3, seed=1)
    x, y = A.data(n=96, dtype=np.float64)
    model_id = stack.upload_id("models", A.export(model, tmp_path / "m.pt2", 4, torch.float64))
    data_id = stack.upload_id("datasets", A.save_npz(tmp_path / "d.npz", x, y))
    job_id = stack.submit(
        {
            "model": model_id,
            "dataset": {"id": data_id, "batch_size": 40},
            "measures": [
                {"name": "lambda_max", "params": {"tol": 1e-8}},
                {"name": "trace", "params": {"num_hvps": 30}},
                {"name": "adaptive_sharpness", "params": {"iterations": 3, "num_batches": 1}},
            ],
            "labels": {"suite": "integration"},
        }
    )
    job = stack.wait(job_id)
    assert job["status"] == "succeeded", job["error"]
    exact = dense_lambda_max(model, x, y, 40)
    got = job["results"]["lambda_max"]["value"]
    assert abs(got - exact) <= 1e-6 * abs(exact), (got, exact)
    assert job["results"]["lambda_max"]["converged"] is True
    assert job["results"]["trace"]["value"] > 0
    assert np.isfinite(job["results"]["adaptive_sharpness"]["value"])
    assert job["evaluation"]["num_examples"] == 96
    assert job["attempts"] == 1 and job["device"] == "cpu" and job["worker"]
    assert job["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert all(p["state"] == "done" for p in job["progress"].values())


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        predicted = model.double()(torch.from_numpy(x)).argmax(1).numpy()
    return float((predicted == y).mean())


def test_held_out_gap_and_pacbayes_flatness_over_http(stack: Stack, tmp_path: Path) -> None:
    model = A.mlp(in_features=4, hidden=8, out=3, seed=1)
    x, y = A.data(n=48, seed=1, dtype=np.float64)
    xt, yt = A.data(n=24, seed=2, dtype=np.float64)
    model_id = stack.upload_id("models", A.export(model, tmp_path / "m.pt2", 4, torch.float64))
    train_id = stack.upload_id("datasets", A.save_npz(tmp_path / "train.npz", x, y))
    test_id = stack.upload_id("datasets", A.save_npz(tmp_path / "test.npz", xt, yt))
    job_id = stack.submit(
        {
            "model": model_id,
            "dataset": {"id": train_id},
            "eval_dataset": {"id": test_id},
            "measures": [{"name": "pacbayes_flatness", "params": {"depth": 5, "samples": 4}}],
        }
    )
    job = stack.wait(job_id)
    assert job["status"] == "succeeded", job["error"]
    ev, train, test = job["evaluation"], accuracy(model, x, y), accuracy(model, xt, yt)
    assert ev["accuracy"] == pytest.approx(train) and ev["test"]["accuracy"] == pytest.approx(test)
    assert ev["test"]["num_examples"] == 24
    assert ev["gap"]["accuracy"] == pytest.approx(train - test)
    assert ev["gap"]["loss"] == pytest.approx(ev["test"]["loss"] - ev["loss"])
    flat = job["results"]["pacbayes_flatness"]
    assert flat["value"] > 0 and flat["diagnostics"]["iterations"] == 5
    assert flat["diagnostics"]["examples"] == 48  # the Hessian-side data only
    assert job["progress"]["pacbayes_flatness"]["state"] == "done"


def bad_job(stack: Stack, model_path: Path, data_path: Path) -> dict:
    job_id = stack.submit(
        {
            "model": stack.upload_id("models", model_path),
            "dataset": {"id": stack.upload_id("datasets", data_path)},
            "measures": [{"name": "lambda_max"}],
        }
    )
    return stack.wait(job_id)


def test_nan_weights_fail_naming_the_parameter(stack: Stack, tmp_path: Path) -> None:
    model = A.mlp(seed=2)
    with torch.no_grad():
        model[0].bias[3] = float("inf")
    x, y = A.data(n=16)
    job = bad_job(
        stack, A.export(model, tmp_path / "nan.pt2", 4), A.save_npz(tmp_path / "d.npz", x, y)
    )
    assert job["status"] == "failed"
    assert job["error"]["status"] == 422 and "'0.bias'" in job["error"]["detail"]
    assert "NaN or Inf" in job["error"]["detail"]


def test_data_that_does_not_fit_fails_naming_shapes(stack: Stack, tmp_path: Path) -> None:
    x, y = A.data(n=16, in_features=7)
    job = bad_job(
        stack, A.export(A.mlp(seed=3), tmp_path / "m.pt2", 4), A.save_npz(tmp_path / "d.npz", x, y)
    )
    assert job["status"] == "failed" and job["error"]["status"] == 422
    assert "(7,) per example" in job["error"]["detail"] and ", 4)" in job["error"]["detail"]


@pytest.mark.parametrize("variant", [A.tampered_weight, A.tampered_opaque])
def test_tampered_pt2_never_runs_its_payload(stack: Stack, tmp_path: Path, variant) -> None:
    marker = tmp_path / "payload-ran"
    good = A.export(A.mlp(seed=4), tmp_path / "good.pt2", 4)
    bad = variant(good, tmp_path / "bad.pt2", marker)
    resp = stack.upload("models", bad)
    if resp.status_code in (200, 201):  # defence in depth: the worker refuses it as well
        x, y = A.data(n=16)
        data_id = stack.upload_id("datasets", A.save_npz(tmp_path / "d.npz", x, y))
        job_id = stack.submit(
            {
                "model": resp.json()["id"],
                "dataset": {"id": data_id},
                "measures": [{"name": "lambda_max"}],
            }
        )
        job = stack.wait(job_id)
        assert job["status"] == "failed" and job["error"]["status"] == 422
        assert "pickle" in job["error"]["detail"]
    else:
        assert 400 <= resp.status_code < 500, resp.text
    time.sleep(0.2)
    assert not marker.exists()


def long_job(stack: Stack, tmp_path: Path) -> str:
    """A measure that runs for minutes unless stopped (dimension 2826 > 2000 Lanczos steps)."""
    x, y = A.data(n=256, in_features=32, classes=10, seed=5)
    model_id = stack.upload_id(
        "models", A.export(A.mlp(32, 64, 10, seed=5), tmp_path / "big.pt2", 32)
    )
    data_id = stack.upload_id("datasets", A.save_npz(tmp_path / "big.npz", x, y))
    return stack.submit(
        {
            "model": model_id,
            "dataset": {"id": data_id, "batch_size": 128},
            "measures": [{"name": "spectral_density", "params": {"runs": 100, "steps": 2000}}],
        }
    )


def test_cancel_running_job_stops_within_seconds(stack: Stack, tmp_path: Path) -> None:
    job_id = long_job(stack, tmp_path)
    asked = stack.cancel_when_moving(
        "jobs", job_id, lambda job: job["progress"]["spectral_density"]["iteration"] > 0
    )
    job = stack.wait(job_id, timeout_s=10, poll_s=0.05)
    assert job["status"] == "cancelled", job
    assert time.monotonic() - asked < 5
    # the worker is free again: a small job runs right after
    x, y = A.data(n=16)
    quick = bad_job(
        stack, A.export(A.mlp(), tmp_path / "q.pt2", 4), A.save_npz(tmp_path / "q.npz", x, y)
    )
    assert quick["status"] == "succeeded"


def test_redelivered_message_of_finished_job_does_not_run(stack: Stack, tmp_path: Path) -> None:
    x, y = A.data(n=16)
    job = bad_job(
        stack, A.export(A.mlp(seed=6), tmp_path / "m.pt2", 4), A.save_npz(tmp_path / "d.npz", x, y)
    )
    assert job["status"] == "succeeded" and job["attempts"] == 1
    app = make_celery(Settings(redis_url=stack.redis_url))
    app.send_task(RUN_JOB_TASK, args=[job["id"]], queue="cpu")  # what a redelivery looks like
    log = stack.data_dir / "worker.log"
    deadline = time.monotonic() + 30
    while f"job {job['id']}: succeeded, not running it" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.1)
    again = stack.job(job["id"])
    assert again["attempts"] == 1 and again["finished_at"] == job["finished_at"]

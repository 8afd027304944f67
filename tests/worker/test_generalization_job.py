"""Jobs with held-out data and an initial model, run in-process against a real Redis."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tasks.contract.spec import JobSpec, JobStatus
from tasks.worker.job import execute
from tasks.worker.runtime import WorkerRuntime
from tests import artifacts as A
from tests.worker.blobs import put


def upload_model(rt: WorkerRuntime, model: nn.Module, path: Path) -> str:
    return put(rt.blobs, "models", A.export(model, path, 4, torch.float64), format="torch_export")


def upload_data(rt: WorkerRuntime, path: Path, x: np.ndarray, y: np.ndarray) -> str:
    return put(rt.blobs, "datasets", A.save_npz(path, x, y), format="npz")


def by_hand(model: nn.Module, x: np.ndarray, y: np.ndarray, loss: str) -> tuple[float, float]:
    """Mean loss and accuracy, straight from the model."""
    model = model.double().eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x).double())
    if loss == "mse":
        t = torch.from_numpy(y).double().reshape(out.shape)
        return float(nn.functional.mse_loss(out, t)), math.nan
    t = torch.from_numpy(y)
    return float(nn.functional.cross_entropy(out, t)), float((out.argmax(1) == t).double().mean())


def submit(rt: WorkerRuntime, **spec: object) -> str:
    return rt.store.create(JobSpec.model_validate(spec), "cpu").id


@pytest.mark.filterwarnings("ignore:noise up to sigma_max")  # a random model's accuracy
def test_held_out_evaluation_and_gap(rt: WorkerRuntime, tmp_path: Path) -> None:
    model = A.mlp(seed=3)
    x, y = A.data(n=48, seed=1, dtype=np.float64)
    xt, yt = A.data(n=40, seed=2, dtype=np.float64)
    job_id = submit(
        rt,
        model=upload_model(rt, model, tmp_path / "m.pt2"),
        dataset={"id": upload_data(rt, tmp_path / "train.npz", x, y), "batch_size": 16},
        eval_dataset={"id": upload_data(rt, tmp_path / "test.npz", xt, yt), "batch_size": 7},
        measures=[
            {"name": "weight_norms"},
            {"name": "pacbayes_flatness", "params": {"depth": 4, "samples": 3}},
        ],
    )
    assert execute(job_id, rt) == "succeeded"
    ev = rt.store.get(job_id).evaluation
    train_loss, train_acc = by_hand(model, x, y, "cross_entropy")
    test_loss, test_acc = by_hand(model, xt, yt, "cross_entropy")
    assert ev["num_examples"] == 48 and ev["mode"] == "eval"
    assert ev["loss"] == pytest.approx(train_loss, rel=1e-9)
    assert ev["accuracy"] == pytest.approx(train_acc)
    assert ev["test"]["num_examples"] == 40
    assert ev["test"]["loss"] == pytest.approx(test_loss, rel=1e-9)
    assert ev["test"]["accuracy"] == pytest.approx(test_acc)
    assert ev["gap"]["accuracy"] == pytest.approx(train_acc - test_acc)
    assert ev["gap"]["loss"] == pytest.approx(test_loss - train_loss, rel=1e-9)
    # the measures saw the training data only
    flat = rt.store.get(job_id).results["pacbayes_flatness"]
    assert flat.diagnostics["examples"] == 48
    assert flat.diagnostics["base_accuracy"] == pytest.approx(train_acc)


def test_mse_gap_has_loss_only(rt: WorkerRuntime, tmp_path: Path) -> None:
    model = A.mlp(out=1, seed=4)
    rng = np.random.default_rng(0)
    x, xt = rng.standard_normal((20, 4)), rng.standard_normal((12, 4))
    y, yt = rng.standard_normal(20), rng.standard_normal(12)
    job_id = submit(
        rt,
        model=upload_model(rt, model, tmp_path / "m.pt2"),
        dataset={"id": upload_data(rt, tmp_path / "train.npz", x, y)},
        eval_dataset={"id": upload_data(rt, tmp_path / "test.npz", xt, yt)},
        loss="mse",
        measures=[{"name": "weight_norms"}],
    )
    assert execute(job_id, rt) == "succeeded"
    ev = rt.store.get(job_id).evaluation
    assert set(ev["gap"]) == {"loss"}
    assert ev["gap"]["loss"] == pytest.approx(
        by_hand(model, xt, yt, "mse")[0] - by_hand(model, x, y, "mse")[0], rel=1e-9
    )


def test_eval_dataset_that_does_not_fit_names_it(rt: WorkerRuntime, tmp_path: Path) -> None:
    x, y = A.data(n=16, dtype=np.float64)
    xt, yt = A.data(n=16, in_features=5, dtype=np.float64)
    job_id = submit(
        rt,
        model=upload_model(rt, A.mlp(), tmp_path / "m.pt2"),
        dataset={"id": upload_data(rt, tmp_path / "train.npz", x, y)},
        eval_dataset={"id": upload_data(rt, tmp_path / "test.npz", xt, yt)},
        measures=[{"name": "weight_norms"}],
    )
    assert execute(job_id, rt) == "failed"
    err = rt.store.get(job_id).error
    assert err.status == 422 and err.detail.startswith("eval_dataset:")
    assert "(5,) per example" in err.detail


def test_missing_eval_dataset_names_it(rt: WorkerRuntime, tmp_path: Path) -> None:
    x, y = A.data(n=16, dtype=np.float64)
    job_id = submit(
        rt,
        model=upload_model(rt, A.mlp(), tmp_path / "m.pt2"),
        dataset={"id": upload_data(rt, tmp_path / "train.npz", x, y)},
        eval_dataset={"id": "e" * 64},
        measures=[{"name": "weight_norms"}],
    )
    assert execute(job_id, rt) == "failed"
    assert rt.store.get(job_id).error.detail.startswith("eval_dataset: dataset eeee")


def test_initial_model_gives_distance_from_init(rt: WorkerRuntime, tmp_path: Path) -> None:
    model, init = A.mlp(seed=5).double(), A.mlp(seed=6).double()
    x, y = A.data(n=16, dtype=np.float64)
    job_id = submit(
        rt,
        model=upload_model(rt, model, tmp_path / "m.pt2"),
        initial_model=upload_model(rt, init, tmp_path / "init.pt2"),
        dataset={"id": upload_data(rt, tmp_path / "train.npz", x, y)},
        measures=[
            {"name": "weight_norms"},
            {"name": "pacbayes_bound", "params": {"samples": 3, "grid_size": 2}},
        ],
    )
    assert execute(job_id, rt) == "succeeded", rt.store.get(job_id).error
    done = rt.store.get(job_id)
    dist = math.sqrt(
        sum(
            float((p - q).pow(2).sum())
            for p, q in zip(model.state_dict().values(), init.state_dict().values(), strict=True)
        )
    )
    assert done.results["weight_norms"].diagnostics["distance_from_init"] == pytest.approx(dist)
    bound = done.results["pacbayes_bound"]
    assert bound.diagnostics["prior_mean"] == "initial_model"
    assert bound.diagnostics["distance_from_prior"] == pytest.approx(dist)
    assert not any("centred at 0" in w for w in bound.warnings)


def test_initial_model_of_another_architecture_fails_clearly(
    rt: WorkerRuntime, tmp_path: Path
) -> None:
    x, y = A.data(n=16, dtype=np.float64)
    job_id = submit(
        rt,
        model=upload_model(rt, A.mlp(hidden=8), tmp_path / "m.pt2"),
        initial_model=upload_model(rt, A.mlp(hidden=6), tmp_path / "init.pt2"),
        dataset={"id": upload_data(rt, tmp_path / "train.npz", x, y)},
        measures=[{"name": "weight_norms"}],
    )
    assert execute(job_id, rt) == "failed"
    done = rt.store.get(job_id)
    assert done.status == JobStatus.failed and done.error.status == 422
    assert done.error.title == "Initial model does not fit the model"
    assert done.error.detail.startswith("initial_model:") and "shape (6, 4)" in done.error.detail
    assert not done.results

"""A train-mode job on a model with dropout, run by the job task against a real Redis: every
measure of the job sees the masks of its dropout_seed, which the results report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tasks.contract.spec import JobSpec, JobStatus
from tasks.engine.problem import Batch, HessianProblem
from tasks.worker.job import execute
from tasks.worker.runtime import WorkerRuntime
from tests import artifacts as A
from tests.engine.reference import dense_hessian
from tests.worker.blobs import put

pytestmark = pytest.mark.filterwarnings("ignore::tasks.engine.problem.TrainModeWarning")

BATCH = 16


def dropout_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3)).double()


def submit(rt: WorkerRuntime, tmp_path: Path, model: nn.Module, x, y, **kw) -> str:
    program = torch.export.export(
        model.train(),
        (torch.zeros(4, 4, dtype=torch.float64),),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    torch.export.save(program, str(tmp_path / "m.pt2"))
    npz = A.save_npz(tmp_path / "d.npz", x, y)
    spec = JobSpec.model_validate(
        {
            "model": put(rt.blobs, "models", tmp_path / "m.pt2", format="torch_export"),
            "dataset": {"id": put(rt.blobs, "datasets", npz, format="npz"), "batch_size": BATCH},
            "measures": [
                {"name": "lambda_max", "params": {"tol": 1e-10}},
                {"name": "top_eigenvalues", "params": {"k": 3, "tol": 1e-10}},
            ],
            "mode": "train",
            **kw,
        }
    )
    return rt.store.create(spec, "cpu").id


def reference(model: nn.Module, x, y, seed: int) -> float:
    """λ1 of the dense float64 Hessian of the same model and batches, same seeded masks."""
    batches = [
        Batch(torch.from_numpy(x[i : i + BATCH]).double(), torch.from_numpy(y[i : i + BATCH]))
        for i in range(0, len(x), BATCH)
    ]
    p = HessianProblem(model, batches, mode="train", dropout_seed=seed)
    return float(torch.linalg.eigvalsh(dense_hessian(p))[-1])


@pytest.mark.parametrize("seed", [None, 11])
def test_every_measure_of_a_job_sees_the_seeded_masks(
    rt: WorkerRuntime, tmp_path: Path, seed: int | None
) -> None:
    model = dropout_model()
    x, y = A.data(n=32, in_features=4)
    extra = {} if seed is None else {"dropout_seed": seed}
    job_id = submit(rt, tmp_path, model, x, y, **extra)
    assert execute(job_id, rt) == "succeeded"
    done = rt.store.get(job_id)
    assert done.status == JobStatus.succeeded
    want = 0 if seed is None else seed
    assert done.spec.dropout_seed == want
    lam, top3 = done.results["lambda_max"], done.results["top_eigenvalues"]
    for result in (lam, top3):
        assert result.diagnostics["mode"] == "train"
        assert result.diagnostics["dropout_seed"] == want
    err = lam.diagnostics["error_estimate"] + top3.diagnostics["error_estimates"][0]
    assert abs(lam.value - top3.value[0]) <= err + 1e-12
    assert lam.value == pytest.approx(reference(model, x, y, want), rel=1e-9)


def test_eval_mode_reports_no_dropout_seed(rt: WorkerRuntime, tmp_path: Path) -> None:
    x, y = A.data(n=32, in_features=4)
    job_id = submit(rt, tmp_path, dropout_model(), x, y, mode="eval", dropout_seed=4)
    assert execute(job_id, rt) == "succeeded"
    done = rt.store.get(job_id)
    for result in done.results.values():
        assert result.diagnostics["mode"] == "eval"
        assert "dropout_seed" not in result.diagnostics

"""The job's `precision`: float16 and bfloat16 models measured in float32 by default, in their
own dtype or float64 when asked, each result saying what was used; and every loader keeps the
dtype the file holds (the cast is the job's, never the loader's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.func import functional_call

from tasks.contract.spec import JobSpec, JobStatus
from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure
from tasks.worker.job import execute
from tasks.worker.loaders import load_model
from tasks.worker.runtime import WorkerRuntime
from tests import artifacts as A
from tests import hf_checkpoints as H
from tests.worker.blobs import put

BF16 = torch.bfloat16
ZOO_MLP = {"in_features": 4, "hidden": [8], "out_features": 3, "activation": "tanh"}


def dense_lambda_max(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The top eigenvalue of the exact float64 Hessian of the mean cross-entropy."""
    m = model.to(torch.float64)
    names = [n for n, _ in m.named_parameters()]
    shapes = [p.shape for _, p in m.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in m.parameters()])

    def loss(w: torch.Tensor) -> torch.Tensor:
        params, offset = {}, 0
        for n, s in zip(names, shapes, strict=True):
            params[n] = w[offset : offset + s.numel()].view(s)
            offset += s.numel()
        out = functional_call(m, params, (x.double(),))
        return torch.nn.functional.cross_entropy(out, y)

    hessian = torch.autograd.functional.hessian(loss, flat)
    return float(torch.linalg.eigvalsh(hessian)[-1])


def run_job(rt: WorkerRuntime, model: Path, meta: dict, npz: Path, **kw) -> dict:
    spec = JobSpec.model_validate(
        {
            "model": put(rt.blobs, "models", model, **meta),
            "dataset": {"id": put(rt.blobs, "datasets", npz, format="npz"), "batch_size": 16},
            "measures": [{"name": "lambda_max"}],
            **kw,
        }
    )
    job = rt.store.create(spec, "cpu")
    assert execute(job.id, rt) == "succeeded", rt.store.get(job.id).error
    done = rt.store.get(job.id)
    assert done.status == JobStatus.succeeded
    return done.results["lambda_max"].model_dump()


@pytest.fixture
def bf16_mlp(tmp_path: Path) -> tuple[Path, Path, torch.nn.Module, np.ndarray, np.ndarray]:
    """A bfloat16 MLP as torch.export writes it, float32 data, and the model itself."""
    model = A.mlp(seed=2).to(BF16)
    path = A.export(model, tmp_path / "bf16.pt2", 4, BF16)
    x, y = A.data(n=32)
    return path, A.save_npz(tmp_path / "d.npz", x, y), model, x, y


def test_auto_measures_a_bfloat16_model_in_float32(rt: WorkerRuntime, bf16_mlp) -> None:
    path, npz, model, x, y = bf16_mlp
    res = run_job(rt, path, {"format": "torch_export"}, npz)
    d = res["diagnostics"]
    assert d["precision"] == {
        "asked": "auto",
        "model_dtype": "bfloat16",
        "products_dtype": "float32",
    }
    assert d["limited_by"] == "float32 rounding" and res["converged"]
    assert d["hvp_eps"] == torch.finfo(torch.float32).eps
    # the same weights cast to float32, measured in float32 by the engine itself
    f32 = A.mlp(seed=2).to(BF16).to(torch.float32)
    xs, ys = torch.tensor(x), torch.tensor(y)
    problem = HessianProblem(f32, [(xs[:16], ys[:16]), (xs[16:], ys[16:])])
    ref = run_measure(problem, "lambda_max")
    assert res["value"] == pytest.approx(ref["value"], rel=8 * torch.finfo(torch.float32).eps)
    # and the exact float64 Hessian of those weights, within the reported error estimate
    exact = dense_lambda_max(A.mlp(seed=2).to(BF16).to(torch.float32), xs, ys)
    assert abs(res["value"] - exact) <= d["error_estimate"], (res["value"], exact, d)


def test_model_measures_a_bfloat16_model_in_bfloat16(rt: WorkerRuntime, bf16_mlp) -> None:
    path, npz, *_ = bf16_mlp
    res = run_job(rt, path, {"format": "torch_export"}, npz, precision="model")
    d = res["diagnostics"]
    assert d["precision"] == {
        "asked": "model",
        "model_dtype": "bfloat16",
        "products_dtype": "bfloat16",
    }
    assert d["hvp_eps"] == torch.finfo(BF16).eps
    assert d["limited_by"] == "bfloat16 rounding" and res["converged"]


def test_float64_on_a_float32_model_is_exact(rt: WorkerRuntime, tmp_path: Path) -> None:
    model = A.mlp(seed=3)
    path = A.export(model, tmp_path / "f32.pt2", 4)
    x, y = A.data(n=32, seed=1)
    npz = A.save_npz(tmp_path / "d.npz", x, y)
    res = run_job(rt, path, {"format": "torch_export"}, npz, precision="float64")
    assert res["diagnostics"]["precision"] == {
        "asked": "float64",
        "model_dtype": "float32",
        "products_dtype": "float64",
    }
    assert res["diagnostics"]["hvp_eps"] == torch.finfo(torch.float64).eps
    exact = dense_lambda_max(A.mlp(seed=3), torch.tensor(x), torch.tensor(y))
    assert abs(res["value"] - exact) <= 1e-8 * abs(exact), (res["value"], exact)
    # the default leaves a float32 model as it is
    res = run_job(rt, path, {"format": "torch_export"}, npz)
    assert res["diagnostics"]["precision"]["products_dtype"] == "float32"


def test_a_bfloat16_causal_lm_checkpoint_is_measured_in_float32(
    rt: WorkerRuntime, tmp_path: Path
) -> None:
    """A tiny GPT-2 saved in bfloat16 by save_pretrained, uploaded as its folder's zip."""
    model = H.gpt2_lm(seed=1).to(BF16)
    folder = H.save(model, tmp_path / "gpt2")
    assert H.config_of(folder)["dtype"] == "bfloat16"
    blob = tmp_path / "gpt2.zip"
    blob.write_bytes(H.zip_folder(folder))
    ids, _ = H.token_batch(4, 9)
    labels = ids.clone()
    labels[:, -2:] = -100
    npz = tmp_path / "lm.npz"
    np.savez(npz, input_ids=ids.numpy(), labels=labels.numpy())
    res = run_job(rt, blob, {"format": "huggingface"}, npz)
    assert res["diagnostics"]["precision"] == {
        "asked": "auto",
        "model_dtype": "bfloat16",
        "products_dtype": "float32",
    }
    assert res["diagnostics"]["limited_by"] == "float32 rounding"
    f32 = H.gpt2_lm(seed=1).to(BF16).to(torch.float32)
    problem = HessianProblem(f32, [({"input_ids": ids}, labels)])
    ref = run_measure(problem, "lambda_max")
    tol = max(res["diagnostics"]["error_estimate"], ref["diagnostics"]["error_estimate"])
    assert abs(res["value"] - ref["value"]) <= 2 * tol


def test_loaders_keep_the_dtype_of_the_file(tmp_path: Path) -> None:
    """bfloat16 weights load as bfloat16 in every format: the job's precision decides."""
    model = A.mlp().to(BF16)
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(st))
    zoo = load_model(st, {"format": "safetensors", "architecture": "mlp", "config": ZOO_MLP})
    assert zoo.dtype == BF16
    loaded = zoo.module.state_dict().values()
    assert all(torch.equal(a, b) for a, b in zip(loaded, model.state_dict().values(), strict=True))
    exported = load_model(
        A.export(A.mlp(), tmp_path / "m.pt2", 4, BF16), {"format": "torch_export"}
    )
    assert exported.dtype == BF16
    scripted = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(A.mlp().to(torch.float16)), str(scripted))
    assert load_model(scripted, {"format": "torchscript"}).dtype == torch.float16
    folder = H.save(H.gpt2_lm().to(BF16), tmp_path / "gpt2")
    hf = load_model(
        folder / "model.safetensors", {"format": "huggingface", "config": H.config_of(folder)}
    )
    assert hf.dtype == BF16


class FixedDtype(torch.nn.Module):
    """A model whose own code casts its input to bfloat16: its export fixes the dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.to(BF16))


def test_a_graph_fixed_to_its_dtype_fails_naming_the_cast(
    rt: WorkerRuntime, tmp_path: Path
) -> None:
    path = A.export(FixedDtype(), tmp_path / "fixed.pt2", 4, BF16)
    npz = A.save_npz(tmp_path / "d.npz", *A.data(n=32))
    spec = JobSpec.model_validate(
        {
            "model": put(rt.blobs, "models", path, format="torch_export"),
            "dataset": {"id": put(rt.blobs, "datasets", npz, format="npz")},
            "measures": [{"name": "lambda_max"}],
        }
    )
    job = rt.store.create(spec, "cpu")
    assert execute(job.id, rt) == "failed"
    detail = rt.store.get(job.id).error.detail
    assert "cast from bfloat16 to float32 (precision 'auto')" in detail, detail
    assert "set precision 'model'" in detail
    res = run_job(rt, path, {"format": "torch_export"}, npz, precision="model")
    assert res["diagnostics"]["precision"]["products_dtype"] == "bfloat16"


def test_a_trajectory_of_bfloat16_checkpoints_says_its_precision(
    rt: WorkerRuntime, tmp_path: Path
) -> None:
    from tasks.contract.spec import TrajectorySpec
    from tasks.store.trajectories import TrajectoryStore
    from tasks.worker import trajectory_job

    store = TrajectoryStore(rt.store.r)
    ids = [
        put(rt.blobs, "models", A.export(A.mlp(seed=s).to(BF16), tmp_path / f"{s}.pt2", 4, BF16),
            format="torch_export")
        for s in (0, 1)
    ]  # fmt: skip
    npz = put(rt.blobs, "datasets", A.save_npz(tmp_path / "d.npz", *A.data(n=32)), format="npz")
    # the bounds stop the run within 3× the products' rounding level, 2·eps·λ or the measured
    # one: 7e-7 relative in float32, 0.047 in bfloat16
    for asked, products, floor in (("auto", "float32", 1e-6), ("model", "bfloat16", 5e-2)):
        spec = TrajectorySpec.model_validate(
            {
                "checkpoints": [{"model": m, "learning_rate": 0.5} for m in ids],
                "dataset": {"id": npz},
                "k": 1,
                "precision": asked,
            }
        )
        t = store.create(spec, "cpu")
        assert trajectory_job.execute(t.id, rt) == "succeeded", store.get(t.id).error
        for point in store.get(t.id).points:
            assert point.precision == {
                "asked": asked,
                "model_dtype": "bfloat16",
                "products_dtype": products,
            }
            assert point.limited_by == f"{products} rounding"
            assert point.residual_bounds[0] <= floor * point.lambda_max

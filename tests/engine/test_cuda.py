"""The engine on a CUDA device, against exact float64 Hessians computed on the host.

Skipped without a GPU. Every model here is float64 and small, so the dense Hessian is exact and
the device's answer must match it to float64 rounding; the float32 case is held to the error
estimate its result reports. Streaming batches reach the device through pinned host memory and
non-blocking copies (tasks.engine.batches), and must give the products of resident batches.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from tasks.engine.batches import BatchSource, DeviceBatches, _to_device
from tasks.engine.operator import HessianOperator
from tasks.engine.problem import Batch, HessianProblem
from tasks.engine.runner import run_measure
from tests.engine.cases import dense_case
from tests.engine.models import make

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEVICE = torch.device("cuda", 0)


def exact(name: str) -> tuple[torch.Tensor, object, list, str]:
    """The float64 Hessian of test model `name`, computed on the host, and the model."""
    H = dense_case(name).hessian
    model, batches, loss = make(name)
    return H, model, batches, loss


@pytest.mark.parametrize("name", ["mlp_tanh", "cnn_bn", "transformer"])
@pytest.mark.parametrize("backend", ["cached", "per_batch", "func"])
def test_hvps_on_cuda_match_the_host_dense_hessian(name: str, backend: str) -> None:
    H, model, batches, loss = exact(name)
    p = HessianProblem(model, batches, loss, device=DEVICE)
    assert p.device == DEVICE and all(q.device == DEVICE for q in p.params)
    op = HessianOperator(p, backend=backend)
    V = torch.randn(p.dim, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    HV = op.matmat(V.to(DEVICE))
    assert HV.device == DEVICE and HV.dtype == torch.float64
    assert torch.allclose(HV.cpu(), H @ V, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", ["mlp_tanh", "cnn_bn", "residual"])
def test_lambda_max_and_top5_on_cuda_match_dense_float64(name: str) -> None:
    H, model, batches, loss = exact(name)
    evals = torch.linalg.eigvalsh(H).flip(0)
    p = HessianProblem(model, batches, loss, device=DEVICE)
    lam = run_measure(p, "lambda_max", {"tol": 1e-10, "max_iter": p.dim})
    assert lam["converged"]
    assert abs(lam["value"] - float(evals[0])) <= 1e-10 * abs(float(evals[0]))
    top = run_measure(p, "top_eigenvalues", {"k": 5, "tol": 1e-8, "max_iter": p.dim})
    assert top["converged"]
    for theta, ref in zip(top["value"], evals[:5].tolist(), strict=True):
        assert abs(theta - ref) <= 1e-8 * abs(float(evals[0]))


def test_basis_on_host_and_float32_basis_on_cuda() -> None:
    """The memory options a GPU job uses: the basis in host memory, or in float32."""
    H, model, batches, loss = exact("mlp_tanh")
    lam_max = float(torch.linalg.eigvalsh(H)[-1])
    p = HessianProblem(model, batches, loss, device=DEVICE)
    host = run_measure(p, "lambda_max", {"tol": 1e-10, "max_iter": p.dim, "basis_on_host": True})
    assert host["converged"] and abs(host["value"] - lam_max) <= 1e-10 * lam_max
    f32 = run_measure(p, "lambda_max", {"tol": 1e-6, "basis_dtype": "float32"})
    assert abs(f32["value"] - lam_max) <= 1e-6 * lam_max


@pytest.mark.parametrize("name", ["mlp_tanh", "cnn_bn"])
def test_float32_model_on_cuda_within_its_error_estimate(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # float32 means float32: cuDNN's default TF32 convolutions round to 10 mantissa bits, which
    # the error estimate (float32 rounding, measured) is not meant to cover
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    H, model, batches, loss = exact(name)
    lam_max = float(torch.linalg.eigvalsh(H)[-1])
    batches32 = [(x.float(), y) for x, y in batches]
    p = HessianProblem(model.float(), batches32, loss, device=DEVICE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_measure(p, "lambda_max", {})
    # float32 products on the card: the answer is as good as the estimate it reports
    assert abs(res["value"] - lam_max) <= res["diagnostics"]["error_estimate"]
    assert res["diagnostics"]["error_estimate"] <= 1e-4 * lam_max


def source_of(batches: list[tuple[torch.Tensor, torch.Tensor]], batch_size: int) -> BatchSource:
    """The batches' examples as a host BatchSource of `batch_size` (read on demand)."""
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    return BatchSource(
        len(y),
        batch_size,
        lambda a, b: Batch(x[a:b].clone(), y[a:b].clone()),
        lambda a, b: y[a:b].clone(),
        x.numel() * x.element_size() + y.numel() * y.element_size(),
    )


def test_streamed_batches_reach_the_card_pinned_and_give_the_resident_products() -> None:
    H, model, batches, loss = exact("cnn_bn")
    source = source_of(batches, batch_size=16)
    streamed = HessianProblem(copy.deepcopy(model), source, loss, device=DEVICE, resident=False)
    resident = HessianProblem(copy.deepcopy(model), source, loss, device=DEVICE, resident=True)
    assert streamed.batches.streaming and not resident.batches.streaming
    assert len(streamed.batches) == len(source) > 1
    assert streamed.counts == resident.counts
    for batch in streamed.batches:  # every batch arrives on the card, one at a time
        assert batch.inputs.device == DEVICE and batch.targets.device == DEVICE
    v = torch.randn(streamed.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    hv = HessianOperator(streamed, backend="per_batch").matvec(v.to(DEVICE))
    assert torch.allclose(hv.cpu(), H @ v, rtol=1e-9, atol=1e-10)
    hv_resident = HessianOperator(resident, backend="per_batch").matvec(v.to(DEVICE))
    assert torch.allclose(hv, hv_resident, rtol=1e-12, atol=1e-13)
    lam = run_measure(streamed, "lambda_max", {"tol": 1e-10, "max_iter": streamed.dim})
    lam_max = float(torch.linalg.eigvalsh(H)[-1])
    assert lam["converged"] and abs(lam["value"] - lam_max) <= 1e-10 * lam_max


def test_host_batches_are_copied_through_pinned_memory() -> None:
    x = torch.randn(8, 4, dtype=torch.float64)
    y = torch.arange(8) % 3
    moved = _to_device(Batch(x, y), DEVICE)
    assert moved.inputs.device == DEVICE and moved.targets.device == DEVICE
    torch.cuda.synchronize()
    assert torch.equal(moved.inputs.cpu(), x) and torch.equal(moved.targets.cpu(), y)
    # the device view of a source streams; a list is resident
    assert DeviceBatches(source_of([(x, y)], 4), DEVICE, resident=False).streaming
    assert not DeviceBatches([(x, y)], DEVICE).streaming


def test_auto_backend_reads_the_cards_free_memory() -> None:
    model, batches, loss = make("mlp_tanh")
    op = HessianOperator(HessianProblem(model, batches, loss, device=DEVICE))
    assert op.backend == "cached"  # a tiny graph fits in any card's free memory
    assert op.graph_estimate is not None and op.graph_estimate > 0

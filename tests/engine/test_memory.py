"""The memory model of the Lanczos measures: the basis in the products' precision on the
operator's device, its size set by the memory it may use, restarts within it still meeting the
accuracy contract against the exact float64 Hessian, an honest InsufficientMemory before any
product when not even the smallest basis fits (and the out-of-memory problem the worker
records for it), and bytes_per_parameter in the results."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch

from tasks.engine.lanczos import LanczosOptions, RestartedWarning, lanczos
from tasks.engine.lanczos.options import LanczosBudget
from tasks.engine.linear_operator import MatrixOperator
from tasks.engine.memory import InsufficientMemory, plan_basis, working_bytes
from tasks.engine.operator import HessianOperator
from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure
from tasks.worker.errors import problem_of
from tests.engine import cases
from tests.engine.cases import dense_case

EPS32 = torch.finfo(torch.float32).eps


def float32_problem(name: str) -> tuple[HessianProblem, torch.Tensor]:
    """Model `name` in float32, and the exact spectrum of that float32 model (ascending)."""
    p, H = cases.float32_case(name)
    return p, torch.linalg.eigvalsh(H)


def test_the_basis_follows_the_products_dtype_and_device() -> None:
    p64 = dense_case("mlp_tanh").problem()
    b64 = LanczosBudget.plan(LanczosOptions(k=2), HessianOperator(p64))
    assert b64.basis_dtype == torch.float64 and b64.basis_device == torch.device("cpu")
    p32, _ = float32_problem("mlp_tanh")
    b32 = LanczosBudget.plan(LanczosOptions(k=2), HessianOperator(p32))
    assert b32.basis_dtype == torch.float32 and b32.basis_device == p32.device
    asked = LanczosBudget.plan(LanczosOptions(basis_dtype=torch.float64), HessianOperator(p32))
    assert asked.basis_dtype == torch.float64


def test_float32_model_float32_basis_meets_the_contract() -> None:
    p, exact = float32_problem("transformer")
    res = lanczos(HessianOperator(p), k=3, max_iter=300, warn=False)
    assert res.converged and res.limited_by == "float32 rounding"
    top = exact.flip(0)[:3]
    err = (torch.tensor(res.eigenvalues, dtype=torch.float64) - top).abs()
    assert bool((err <= torch.tensor(res.error_estimates)).all())
    assert float(err.max()) <= 40 * EPS32 * float(exact.abs().max())
    assert res.basis_bytes_peak <= res.max_basis * p.dim * 4  # four bytes a number


def test_float64_model_keeps_its_tolerance() -> None:
    case = dense_case("mlp_tanh")
    res = lanczos(HessianOperator(case.problem()), k=3, tol=1e-8, max_iter=400, warn=False)
    assert res.converged
    top = case.top[:3]
    rel = ((torch.tensor(res.eigenvalues, dtype=torch.float64) - top).abs() / top.abs()).max()
    assert float(rel) <= 1e-8
    assert res.basis_bytes_peak > 0 and res.basis_bytes_peak % 8 == 0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_tiny_budget_restarts_and_still_converges(dtype: str) -> None:
    if dtype == "float64":
        case = dense_case("transformer")
        p, exact = case.problem(), case.eigenvalues
    else:
        p, exact = float32_problem("transformer")
    item = 8 if dtype == "float64" else 4
    basis_dtype = torch.float64 if dtype == "float64" else torch.float32
    budget = working_bytes(p.dim, basis_dtype) + 7 * item * p.dim  # room for 7 basis vectors
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = lanczos(
            HessianOperator(p),
            k=2,
            tol=1e-8,
            max_iter=2000,
            memory_budget_bytes=budget,
            basis_storage="memory",  # shrink, do not spill
        )
    assert res.max_basis == 7 and res.basis_limited_by_memory and res.restarts > 0
    assert res.basis_peak <= 7 and res.basis_bytes_peak <= 7 * item * p.dim
    assert res.converged, res.limited_by
    restarted = [str(w.message) for w in caught if issubclass(w.category, RestartedWarning)]
    assert restarted and "memory_budget_bytes" in restarted[0]
    got = torch.tensor(res.eigenvalues, dtype=torch.float64)
    err = (got - exact.flip(0)[:2]).abs()
    assert bool((err <= torch.tensor(res.error_estimates) + 1e-12).all())
    if dtype == "float64":
        assert float((err / got.abs()).max()) <= 1e-8


def test_a_budget_below_the_smallest_basis_names_need_and_have() -> None:
    A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    with pytest.raises(InsufficientMemory) as info:
        lanczos(MatrixOperator(A), k=3, memory_budget_bytes=1000)
    e = info.value
    need = working_bytes(100, torch.float64) + 5 * 8 * 100  # working vectors and k + 2 columns
    assert e.need_bytes == need and e.have_bytes == 1000
    text = str(e)
    assert f"{need} bytes" in text and "1000 bytes" in text
    assert "memory_budget_bytes" in text
    problem = problem_of(e, "job", "lambda_max", "", 60)
    assert problem.type.endswith("out-of-memory") and problem.title == "Insufficient memory"
    assert str(need) in (problem.detail or "") and "1000" in (problem.detail or "")


def test_the_plan_uses_the_available_memory_and_clamps_to_what_was_asked() -> None:
    plan = plan_basis(1000, 40, 3, torch.float32, "cpu")
    assert plan.columns == 40 and not plan.limited_by_memory and plan.have_bytes > 0
    tight = plan_basis(
        1000,
        40,
        3,
        torch.float32,
        "cpu",
        budget_bytes=working_bytes(1000, torch.float32) + 10 * 4000,
        storage="memory",
    )
    assert tight.columns == 10 and tight.limited_by_memory and not tight.spill


def test_a_torch_out_of_memory_error_is_an_out_of_memory_problem() -> None:
    e = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    problem = problem_of(e, "job", "lambda_max", "", 60)
    assert problem.type.endswith("out-of-memory")
    assert "Tried to allocate 2.00 GiB" in (problem.detail or "")


@pytest.mark.parametrize("measure", ["lambda_max", "top_eigenvalues"])
def test_results_state_bytes_per_parameter(measure: str) -> None:
    p, _ = float32_problem("mlp_tanh")
    params = {"k": 3} if measure == "top_eigenvalues" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = run_measure(p, measure, params)
    diag = out["diagnostics"]
    per = diag["bytes_per_parameter"]
    # the float32 basis's peak and the float64 working vectors, per parameter
    working = working_bytes(p.dim, torch.float32) / p.dim
    expected = diag["basis_bytes_peak"] / p.dim + working
    assert per == pytest.approx(expected)
    assert working < per <= working + 4 * diag["max_basis"]
    assert diag["memory_budget_bytes"] > 0 and diag["basis_limited_by_memory"] is False


class _CountingOperator(MatrixOperator):
    """A dense operator that, at each product, adds up the vectors of the model's size the
    run holds (every 1-D tensor of `dim` numbers Python can reach, one per storage; the
    basis' chunks, whose storages hold several columns, are the basis' and not counted)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__(matrix)
        self.peak_bytes = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        out = super().matvec(v)
        held: dict[int, int] = {}
        for obj in gc.get_objects():
            if isinstance(obj, torch.Tensor) and obj.ndim == 1 and obj.numel() == self.dim:
                storage = obj.untyped_storage()
                if storage.nbytes() <= 8 * self.dim:
                    held[storage.data_ptr()] = storage.nbytes()
        self.peak_bytes = max(self.peak_bytes, sum(held.values()))
        return out


def _matrix_with_top(n: int, top: list[float]) -> torch.Tensor:
    """A random symmetric n×n matrix whose largest eigenvalues are `top`, the rest in [0, 8)
    (built here so that no vector of n numbers outlives it)."""
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    rest = torch.rand(n - len(top), generator=g, dtype=torch.float64) * 8
    return (U * torch.cat([torch.tensor(top, dtype=torch.float64), rest])) @ U.T


@pytest.mark.parametrize(
    ("basis_dtype", "eps"), [(torch.float64, None), (torch.float32, EPS32)], ids=["f64", "f32"]
)
def test_working_vectors_are_what_the_memory_model_states(basis_dtype, eps) -> None:
    """Besides its basis a run holds no more than `working_bytes` of vectors of the model's
    size, through steps, thick restarts and the residual checks (a restart forces them)."""
    n = 3000
    op = _CountingOperator(_matrix_with_top(n, [10.0, 9.0, 8.5]))
    res = lanczos(op, k=2, max_basis=8, basis_dtype=basis_dtype, hvp_eps=eps, warn=False)
    assert res.restarts > 0 and res.converged, res.limited_by
    assert abs(res.eigenvalues[0] - 10.0) <= 1e-6
    assert 0 < op.peak_bytes <= working_bytes(n, basis_dtype), (
        op.peak_bytes,
        working_bytes(n, basis_dtype),
    )

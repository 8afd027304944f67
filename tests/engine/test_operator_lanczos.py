"""HVP operator and Lanczos against exact Hessians from torch.func.hessian in float64."""

from __future__ import annotations

import warnings

import pytest
import torch

from tasks.engine.context import Cancelled, MeasureContext
from tasks.engine.lanczos import NotConvergedWarning, lanczos
from tasks.engine.linear_operator import MatrixOperator
from tasks.engine.operator import HessianOperator
from tasks.engine.problem import HessianProblem
from tests.engine.cases import DenseCase, dense_case
from tests.engine.models import MLP, data, make


def problem_for(name: str) -> HessianProblem:
    model, batches, loss = make(name)
    return HessianProblem(model, batches, loss)


@pytest.mark.parametrize("backend", ["cached", "per_batch", "func"])
def test_hvp_matches_dense(dense: DenseCase, backend: str) -> None:
    p, H = dense.problem(), dense.hessian
    op = HessianOperator(p, backend=backend)
    V = torch.randn(p.dim, 3, dtype=torch.float64)
    assert torch.allclose(op.matmat(V), H @ V, rtol=1e-9, atol=1e-10)
    assert op.hvps == 3


@pytest.mark.parametrize("backend", ["auto", "cached", "per_batch", "func"])
def test_products_under_no_grad(backend: str) -> None:
    """A caller inside torch.no_grad() (an evaluation loop, a notebook) gets the same products:
    the operator turns gradients on for its own work."""
    case = dense_case("mlp_tanh")
    p, H = case.problem(), case.hessian
    V = torch.randn(p.dim, 2, dtype=torch.float64)
    with torch.no_grad():
        op = HessianOperator(p, backend=backend)
        HV, Hv = op.matmat(V), op.matvec(V[:, 0])
    assert torch.allclose(HV, H @ V, rtol=1e-9, atol=1e-10)
    assert torch.allclose(Hv, H @ V[:, 0], rtol=1e-9, atol=1e-10)


def test_top5_and_bounds(dense: DenseCase) -> None:
    p, evals = dense.problem(), dense.eigenvalues
    res = lanczos(HessianOperator(p), k=5, tol=1e-8, max_iter=p.dim, most_negative=True)
    assert res.converged
    true_top = evals.flip(0)[:5]
    for theta, bound, lam in zip(res.eigenvalues, res.residual_bounds, true_top, strict=True):
        assert abs(theta - float(lam)) <= 1e-6 * abs(float(lam))
        # some eigenvalue lies within the residual bound of every Ritz value
        assert float((evals - theta).abs().min()) <= bound + 1e-12
    assert abs(res.most_negative - float(evals[0])) <= 1e-6 * float(evals.abs().max())


def test_most_negative_from_dense_indefinite_matrix() -> None:
    g = torch.Generator().manual_seed(1)
    A = torch.randn(60, 60, generator=g, dtype=torch.float64)
    A = A + A.T
    res = lanczos(MatrixOperator(A), k=2, tol=1e-9, max_iter=60, most_negative=True)
    ev = torch.linalg.eigvalsh(A)
    assert res.converged and res.most_negative_converged
    assert abs(res.most_negative - float(ev[0])) < 1e-7 * float(ev.abs().max())
    assert abs(res.eigenvalues[1] - float(ev[-2])) < 1e-7 * float(ev.abs().max())


def test_invariant_subspace_and_small_dim() -> None:
    # rank-2 matrix: Krylov space becomes invariant after 2-3 steps; k=4 needs restarts
    u = torch.randn(30, 2, dtype=torch.float64)
    A = u @ torch.diag(torch.tensor([5.0, 2.0], dtype=torch.float64)) @ u.T
    # two eigenvalues are 0: a relative tol cannot be met there; they are as accurate as
    # float64 products allow, which is converged by rounding (no warning), and an absolute
    # tol can be met
    ev = torch.linalg.eigvalsh(A).flip(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotConvergedWarning)
        zero = lanczos(MatrixOperator(A), k=4, tol=1e-8, max_iter=500)
    assert zero.converged and zero.limited_by == "float64 rounding"
    assert zero.limited_by_each[:2] == ["tolerance", "tolerance"]
    assert torch.allclose(torch.tensor(zero.eigenvalues, dtype=torch.float64), ev[:4], atol=1e-8)
    res = lanczos(MatrixOperator(A), k=4, tol=1e-8, max_iter=500, atol=1e-12)
    assert res.converged and res.limited_by == "tolerance"
    assert torch.allclose(torch.tensor(res.eigenvalues, dtype=torch.float64), ev[:4], atol=1e-8)
    tiny = lanczos(MatrixOperator(torch.diag(torch.tensor([3.0, 1.0, -2.0]))), k=2)
    assert tiny.converged and tiny.iterations <= 3
    assert tiny.eigenvalues == pytest.approx([3.0, 1.0])


def test_uneven_batches_equal_one_batch() -> None:
    torch.manual_seed(0)
    model = MLP().double()
    x, y = data(512, (4,), 3)
    one = lanczos(HessianOperator(HessianProblem(model, [(x, y)])), tol=1e-10, max_iter=200)
    split = HessianProblem(model, [(x[:500], y[:500]), (x[500:], y[500:])])
    two = lanczos(HessianOperator(split, backend="per_batch"), tol=1e-10, max_iter=200)
    assert two.eigenvalues[0] == pytest.approx(one.eigenvalues[0], rel=1e-8)


def test_non_convergence_warns() -> None:
    p = problem_for("mlp_tanh")
    with pytest.warns(NotConvergedWarning, match="did NOT converge"):
        res = lanczos(HessianOperator(p), k=1, tol=1e-10, max_iter=2)
    assert not res.converged and res.iterations == 2


def test_cancellation() -> None:
    p = problem_for("mlp_tanh")
    calls = iter(range(100))
    ctx = MeasureContext(p, should_cancel=lambda: next(calls) >= 3)
    with pytest.raises(Cancelled):
        lanczos(HessianOperator(p), tol=1e-12, max_iter=50, ctx=ctx)


def test_float32_agrees_with_float64() -> None:
    exact = float(dense_case("mlp_tanh").eigenvalues.max())
    model, batches, loss = make("mlp_tanh")
    m32 = model.float()
    b32 = [(x.float(), y) for x, y in batches]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)
        res = lanczos(HessianOperator(HessianProblem(m32, b32)), tol=1e-5, max_iter=100)
    assert res.eigenvalues[0] == pytest.approx(exact, rel=1e-4)


def test_scripted_and_exported_modules() -> None:
    model, batches, loss = make("cnn_bn")
    ref = lanczos(HessianOperator(HessianProblem(model, batches)), tol=1e-10).eigenvalues[0]
    scripted = torch.jit.script(model.eval())
    with pytest.raises(ValueError, match="TorchScript"):
        HessianOperator(HessianProblem(scripted, batches), backend="func")
    s = lanczos(HessianOperator(HessianProblem(scripted, batches)), tol=1e-10).eigenvalues[0]
    assert s == pytest.approx(ref, rel=1e-8)
    x = batches[0][0]
    exported = torch.export.export(model.eval(), (x,))
    e = lanczos(HessianOperator(HessianProblem(exported, batches)), tol=1e-10).eigenvalues[0]
    assert e == pytest.approx(ref, rel=1e-8)


def test_long_runs_keep_the_basis_orthonormal_and_grow_no_ghosts() -> None:
    """300 steps on a spectrum whose top converges early: without full reorthogonalisation,
    copies of the converged λ₁ ("ghosts") appear among the top-k and the Ritz vectors lose
    orthogonality."""
    g = torch.Generator().manual_seed(3)
    U, _ = torch.linalg.qr(torch.randn(400, 400, generator=g, dtype=torch.float64))
    spectrum = torch.cat([torch.tensor([10.0, 9.0, 8.0]), torch.linspace(-1, 1, 397)]).double()
    A = (U * spectrum) @ U.T
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)
        res = lanczos(MatrixOperator(A), k=8, tol=1e-14, max_iter=300, return_eigenvectors=True)
    assert res.iterations > 100
    true = spectrum.sort(descending=True).values[:8]
    got = torch.tensor(res.eigenvalues, dtype=torch.float64)
    assert torch.allclose(got[:3], true[:3], rtol=1e-12)  # no second copy of 10, 9 or 8
    assert float(got[3]) < 1.0 + 1e-9
    V = res.eigenvectors
    assert float((V.T @ V - torch.eye(8, dtype=torch.float64)).abs().max()) < 1e-10

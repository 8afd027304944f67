"""One operator interface: every curvature operator satisfies `LinearOperator`, and every
estimator takes a dense tensor as well, with the same answer as through `MatrixOperator`."""

from __future__ import annotations

import pytest
import torch

from tasks.engine.density import slq
from tasks.engine.ggn import GGNOperator
from tasks.engine.lanczos import lanczos
from tasks.engine.linear_operator import (
    DiagonalOperator,
    LinearOperator,
    MatrixOperator,
    as_operator,
)
from tasks.engine.operator import HessianOperator
from tasks.engine.preconditioner import PreconditionedOperator
from tasks.engine.problem import HessianProblem
from tasks.engine.trace import block_krylov, frobenius, hutchinson, hutchpp, xtrace
from tests.engine.cases import dense_case
from tests.engine.models import make


def _problem() -> HessianProblem:
    model, batches, loss = make("mlp_tanh")
    return HessianProblem(model, batches, loss)


def test_every_operator_satisfies_the_protocol() -> None:
    p = _problem()
    hessian = HessianOperator(p)
    ops = [
        hessian,
        GGNOperator(p),
        MatrixOperator(torch.eye(3)),
        PreconditionedOperator(hessian, torch.ones(p.dim)),
    ]
    for op in ops:
        assert isinstance(op, LinearOperator), type(op).__name__
        assert op.dtype == torch.float64 and op.hvps == 0 and op.seconds == 0.0
    assert not isinstance(torch.eye(3), LinearOperator)


def test_as_operator_wraps_a_tensor_and_passes_an_operator_through() -> None:
    A = torch.randn(5, 5, dtype=torch.float64)
    A = A + A.T
    op = as_operator(A)
    assert isinstance(op, MatrixOperator) and op.dim == 5
    v = torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), A @ v, rtol=0, atol=0)
    assert as_operator(op) is op


@pytest.mark.parametrize(
    "estimate",
    [
        lambda A: hutchinson(A, 40, seed=3),
        lambda A: frobenius(A, 40, seed=3),
        lambda A: hutchpp(A, 30, seed=3),
        lambda A: xtrace(A, 30, seed=3),
        lambda A: block_krylov(A, 30, seed=3),
    ],
    ids=["hutchinson", "frobenius", "hutchpp", "xtrace", "krylov"],
)
def test_trace_estimators_take_a_dense_hessian(estimate) -> None:
    H = dense_case("mlp_tanh").hessian
    on_tensor, on_operator = estimate(H), estimate(MatrixOperator(H))
    assert on_tensor.estimate == on_operator.estimate
    assert on_tensor.std_error == on_operator.std_error
    assert on_tensor.hvps == on_operator.hvps > 0


def test_lanczos_and_slq_take_a_dense_hessian() -> None:
    case = dense_case("mlp_tanh")
    H, exact = case.hessian, case.eigenvalues
    res = lanczos(H, k=2, tol=1e-10, seed=1)
    torch.testing.assert_close(
        torch.as_tensor(res.eigenvalues, dtype=torch.float64),
        exact.flip(0)[:2],
        rtol=1e-9,
        atol=1e-12,
    )
    density = slq(H, runs=2, steps=H.shape[0], seed=1)
    assert density.hvps > 0


def test_a_diagonal_operator_is_its_dense_matrix() -> None:
    d = torch.tensor([3.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    diagonal, dense = DiagonalOperator(d), MatrixOperator(torch.diag(d))
    assert isinstance(diagonal, LinearOperator) and diagonal.hvps == 0
    V = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(diagonal.matvec(V[:, 0]), dense.matvec(V[:, 0]))
    assert torch.equal(diagonal.matmat(V), dense.matmat(V))
    assert diagonal.hvps == dense.hvps == 3
    assert lanczos(diagonal, k=2).eigenvalues == pytest.approx([3.0, 2.0], rel=1e-10)

"""The Gauss–Newton operator against a dense Jᵀ H J built independently, and the measures on it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from tasks.engine.ggn import GGNOperator
from tasks.engine.linear_operator import MatrixOperator
from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure
from tasks.engine.trace import frobenius
from tests.engine.models import MLP
from tests.engine.reference import dense_hessian


def dense_ggn(problem: HessianProblem) -> Tensor:
    """Σ_b (n_b/N) J_bᵀ H_b J_b from torch.autograd.functional's full Jacobian of the outputs
    and full Hessian of the loss in the outputs (float64)."""
    module = copy.deepcopy(problem.module)
    primal = problem.flatten([q.detach() for q in problem.params])
    loss_fn = problem.loss_fn
    G = torch.zeros(problem.dim, problem.dim, dtype=torch.float64)
    for batch, w in zip(problem.batches, problem.weights, strict=True):

        def outputs_of(flat: Tensor, batch=batch) -> Tensor:
            params = dict(zip(problem.names, problem.unflatten(flat), strict=True))
            return functional_call(module, params, (batch.inputs,))

        out = outputs_of(primal).detach()
        J = torch.autograd.functional.jacobian(outputs_of, primal).reshape(-1, problem.dim)
        H = torch.autograd.functional.hessian(
            lambda o, batch=batch, shape=out.shape: loss_fn(o.reshape(shape), batch.targets),
            out.reshape(-1),
        )
        G += w * (J.T @ H @ J)
    return G


def _problem(loss: str, mode: str = "eval") -> HessianProblem:
    torch.manual_seed(0)
    model = MLP(d_in=4, hidden=6, d_out=3).double()
    x = torch.randn(12, 4, dtype=torch.float64)
    if loss == "cross_entropy":
        y = torch.randint(0, 3, (12,))
    else:
        y = torch.randn(12, 3, dtype=torch.float64)
    batches = [(x[:7], y[:7]), (x[7:], y[7:])]  # uneven: weights 7/12 and 5/12
    return HessianProblem(model, batches, loss=loss, mode=mode)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("backend", ["cached", "per_batch"])
def test_ggn_products_match_dense_jt_h_j(loss: str, backend: str) -> None:
    problem = _problem(loss)
    G = dense_ggn(problem)
    op = GGNOperator(problem, backend=backend)
    eye = torch.eye(problem.dim, dtype=torch.float64)
    got = op.matmat(eye)
    assert op.hvps == problem.dim and op.dtype == torch.float64
    scale = float(G.abs().max())
    assert float((got - G).abs().max()) <= 1e-10 * scale
    # G is symmetric positive semi-definite, and not the Hessian away from a minimum
    assert float(torch.linalg.eigvalsh(G).min()) >= -1e-12 * scale
    H = dense_hessian(problem)
    assert float((H - G).abs().max()) > 1e-3 * scale


@pytest.mark.parametrize("backend", ["cached", "per_batch"])
def test_ggn_products_under_no_grad(backend: str) -> None:
    problem = _problem("cross_entropy")
    G = dense_ggn(problem)
    v = torch.randn(problem.dim, dtype=torch.float64)
    with torch.no_grad():
        got = GGNOperator(problem, backend=backend).matvec(v)
    assert torch.allclose(got, G @ v, rtol=1e-9, atol=1e-10)


def test_ggn_equals_the_hessian_for_a_linear_model_under_mse() -> None:
    torch.manual_seed(1)
    model = nn.Linear(5, 2).double()
    x = torch.randn(9, 5, dtype=torch.float64)
    problem = HessianProblem(model, [(x, torch.randn(9, 2, dtype=torch.float64))], loss="mse")
    G = GGNOperator(problem).matmat(torch.eye(problem.dim, dtype=torch.float64))
    H = dense_hessian(problem)
    assert float((G - H).abs().max()) <= 1e-12 * float(H.abs().max())


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_curvature_measures_run_on_the_ggn(loss: str) -> None:
    problem = _problem(loss)
    G = dense_ggn(problem)
    evals = torch.linalg.eigvalsh(G)
    res = run_measure(problem, "lambda_max", {"curvature": "ggn", "tol": 1e-10})
    assert res["diagnostics"]["curvature"] == "ggn"
    assert res["value"] == pytest.approx(float(evals[-1]), rel=1e-8)
    top = run_measure(problem, "top_eigenvalues", {"curvature": "ggn", "k": 3, "tol": 1e-10})
    assert top["value"] == pytest.approx(evals[-3:].flip(0).tolist(), rel=1e-7)
    trace = run_measure(problem, "trace", {"curvature": "ggn", "num_hvps": 40})
    se = trace["diagnostics"]["std_error"]
    assert abs(trace["value"] - float(evals.sum())) <= 4 * se + 1e-9 * float(evals.sum())
    # the same probes (same seed) on the dense matrix give the same estimate
    fro = run_measure(problem, "frobenius", {"curvature": "ggn", "num_hvps": 40, "seed": 3})
    same = frobenius(MatrixOperator(G), 40, seed=3)
    assert fro["value"] == pytest.approx(same.estimate, rel=1e-9)
    density = run_measure(problem, "spectral_density", {"curvature": "ggn", "steps": 40, "runs": 1})
    assert density["diagnostics"]["lambda_max"] == pytest.approx(float(evals[-1]), rel=1e-6)
    hess = run_measure(problem, "lambda_max", {"tol": 1e-10})
    assert hess["diagnostics"]["curvature"] == "hessian"
    assert hess["value"] == pytest.approx(float(torch.linalg.eigvalsh(dense_hessian(problem))[-1]))


def test_ggn_refuses_a_backend_it_lacks_and_an_unknown_curvature() -> None:
    problem = _problem("mse")
    with pytest.raises(ValueError, match="curvature 'ggn'"):
        run_measure(problem, "lambda_max", {"curvature": "ggn"}, hvp_backend="func")
    with pytest.raises(ValueError, match="curvature"):
        run_measure(problem, "lambda_max", {"curvature": "fisher"})

"""Edges of stability per optimizer, and Adam's preconditioned sharpness against dense algebra."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.contract.edge_analysis import edge_split
from tasks.engine.preconditioner import OptimizerStateError
from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure
from tasks.engine.stability import edge, stability_ratio
from tests.engine.models import MLP, mlp_problem
from tests.engine.reference import dense_hessian


def test_momentum_edge_at_beta_09_and_eta_01() -> None:
    e = edge("sgd", 0.1, momentum=0.9)
    lam = 30.0
    assert e.threshold == pytest.approx(2 * 1.9 / 0.1)
    assert stability_ratio(lam, e.threshold) == pytest.approx(lam * 0.1 / (2 * 1.9))
    gd = edge("gd", 0.1)
    assert stability_ratio(lam, gd.threshold) == pytest.approx(lam * 0.1 / 2)
    adam = edge("adam", 0.1, beta1=0.9)
    assert adam.threshold == pytest.approx(38 / 0.1) and adam.sharpness == (
        "preconditioned_lambda_max"
    )
    assert edge("sgd", 0.1, momentum=0.9, nesterov=True).threshold == pytest.approx(
        3.8 / (2.8 * 0.1)
    )
    with pytest.raises(ValueError, match="optimizer name"):
        edge("lion", 0.1)


def _runs_away(optimizer: str, lam: float, eta: float, beta: float, nesterov: bool) -> bool:
    """Train w on L = λw²/2 with torch's own optimizer for 2000 steps: does |w| grow?"""
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    if optimizer == "gd":
        opt = torch.optim.SGD([w], lr=eta)
    else:
        opt = torch.optim.SGD([w], lr=eta, momentum=beta, nesterov=nesterov)
    for _ in range(2000):
        opt.zero_grad()
        (0.5 * lam * w * w).sum().backward()
        opt.step()
    return abs(float(w.detach())) > 1.0


@pytest.mark.parametrize(
    ("optimizer", "beta", "nesterov"),
    [("gd", 0.0, False), ("sgd", 0.9, False), ("sgd", 0.5, False), ("sgd", 0.9, True)],
)
def test_the_edge_is_where_torchs_optimizer_diverges_on_a_quadratic(
    optimizer: str, beta: float, nesterov: bool
) -> None:
    eta = 0.1
    threshold = edge(optimizer, eta, momentum=beta, nesterov=nesterov).threshold
    assert not _runs_away(optimizer, 0.99 * threshold, eta, beta, nesterov)
    assert _runs_away(optimizer, 1.01 * threshold, eta, beta, nesterov)


def _adam_state(model: torch.nn.Module, x, y, steps: int, betas, eps) -> dict:
    """Adam's state after `steps` real steps of torch.optim.Adam, by parameter name."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=betas, eps=eps)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    state = {}
    for name, p in model.named_parameters():
        state[f"exp_avg_sq.{name}"] = opt.state[p]["exp_avg_sq"].detach().clone()
        step = opt.state[p]["step"]
    state["step"] = torch.as_tensor(step, dtype=torch.float64).reshape(1)
    return state


@pytest.mark.parametrize(
    ("steps", "betas", "eps"), [(3, (0.9, 0.999), 1e-8), (40, (0.8, 0.99), 1e-4)]
)
def test_preconditioned_lambda_max_against_dense_p_inv_half_h_p_inv_half(steps, betas, eps) -> None:
    torch.manual_seed(0)
    model = MLP(d_in=4, hidden=6, d_out=3).double()
    x = torch.randn(20, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    state = _adam_state(model, x, y, steps, betas, eps)
    problem = HessianProblem(model, [(x[:12], y[:12]), (x[12:], y[12:])])
    b1, b2 = betas
    t = int(state["step"])
    assert t == steps
    v = torch.cat([state[f"exp_avg_sq.{n}"].reshape(-1) for n in problem.names])
    P = (1 - b1**t) * ((v / (1 - b2**t)).sqrt() + eps)
    H = dense_hessian(problem)
    M = H / P.sqrt()[:, None] / P.sqrt()[None, :]
    exact = float(torch.linalg.eigvalsh(0.5 * (M + M.T))[-1])
    # the same number as the largest eigenvalue of the non-symmetric P⁻¹H
    assert exact == pytest.approx(float(torch.linalg.eigvals(H / P[:, None]).real.max()), rel=1e-9)
    params = {"beta1": b1, "beta2": b2, "eps": eps, "tol": 1e-10, "learning_rate": 0.01}
    res = run_measure(problem, "preconditioned_lambda_max", params, optimizer_state=state)
    assert res["value"] == pytest.approx(exact, rel=1e-8)
    d = res["diagnostics"]
    assert d["stability_threshold"] == pytest.approx((2 + 2 * b1) / ((1 - b1) * 0.01))
    assert d["stability_ratio"] == pytest.approx(exact / d["stability_threshold"], rel=1e-8)
    assert d["step"] == steps


def test_preconditioned_lambda_max_says_what_is_missing() -> None:
    model, problem = mlp_problem(8)
    with pytest.raises(ValueError, match="optimizer_state"):
        run_measure(problem, "preconditioned_lambda_max")
    state = {f"exp_avg_sq.{n}": torch.ones_like(p) for n, p in model.named_parameters()}
    with pytest.raises(OptimizerStateError, match="'step'"):
        run_measure(problem, "preconditioned_lambda_max", optimizer_state=state)
    state["step"] = torch.tensor([5.0])
    del state["exp_avg_sq.fc2.bias"]
    with pytest.raises(OptimizerStateError, match="fc2.bias"):
        run_measure(problem, "preconditioned_lambda_max", optimizer_state=state)


def test_edge_split_reports_steps_past_the_edge_apart() -> None:
    ratios = [0.5, 1.2, 1.5, 0.8, 0.9]
    overlaps = [
        {"start": 0, "end": 1, "top_overlap": 0.99, "subspace_overlap": 0.98},
        {"start": 1, "end": 2, "top_overlap": 0.40, "subspace_overlap": 0.60},
        {"start": 2, "end": 3, "top_overlap": 0.60, "subspace_overlap": 0.70},
        {"start": 3, "end": 4, "top_overlap": 0.95, "subspace_overlap": 0.90},
    ]
    split = edge_split(ratios, overlaps)
    assert split["beyond_edge"]["starts"] == [1, 2]
    assert split["beyond_edge"]["mean_top_overlap"] == pytest.approx(0.5)
    assert split["below_edge"]["starts"] == [0, 3]
    assert split["below_edge"]["mean_subspace_overlap"] == pytest.approx(0.94)
    assert "turned more on steps past the edge" in split["summary"]
    none_beyond = edge_split([0.1, 0.2], overlaps[:1])
    assert none_beyond["beyond_edge"]["pairs"] == 0 and "cannot" in none_beyond["summary"]
    assert math.isfinite(split["below_edge"]["min_top_overlap"])

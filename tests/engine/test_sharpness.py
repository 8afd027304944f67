"""Adaptive and standard sharpness: closed forms on quadratics, invariance, worst ≥ average."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tasks.engine.lanczos import lanczos
from tasks.engine.operator import HessianOperator
from tasks.engine.problem import HessianProblem
from tasks.engine.sharpness import apgd, checkpoints, halve_at_checkpoint, sharpness
from tests.engine.models import MLP, data
from tests.engine.reference import dense_hessian


class Scale(nn.Module):
    """f(x) = w ⊙ x: with MSE the loss is a separable quadratic in w."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 2.0, d, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return self.w * x


def test_apgd_checkpoints_follow_the_schedule() -> None:
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 of 100 iterations
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize(
    ("increases", "steps", "step_prev", "step_now", "best_prev", "best_now", "halve"),
    [
        (3, 4, 1.0, 0.5, 1.0, 1.0, False),  # 3 ≥ 0.75·4; halved at w_{j−1}: (2) does not hold
        (2, 4, 1.0, 0.5, 1.0, 2.0, True),  # (1): 2 < 3
        (3, 4, 0.5, 0.5, 1.0, 1.0, True),  # (2): same step, same best
        (3, 4, 0.5, 0.5, 1.0, 1.5, False),  # same step, but the best moved
        (4, 5, 0.5, 0.5, 1.0, 2.0, False),  # 4 ≥ 3.75
        (3, 5, 0.5, 0.5, 1.0, 2.0, True),  # 3 < 3.75
        (0, 1, 0.5, 0.25, 1.0, 1.0, True),  # 0 < 0.75
    ],
)
def test_halving_rule_is_croce_and_hein(
    increases: int,
    steps: int,
    step_prev: float,
    step_now: float,
    best_prev: float,
    best_now: float,
    halve: bool,
) -> None:
    got = halve_at_checkpoint(increases, steps, step_prev, step_now, best_prev, best_now)
    assert got is halve


class _Scripted:
    """An objective whose value at iteration k is script[k], whatever the iterate.

    apgd calls it once at the start, once per iteration, and once more after a halving (the
    restart from the best point, whose value apgd does not use); `progress` tells which
    iteration is being evaluated."""

    def __init__(self, start: float, script: list[float], progress: dict) -> None:
        self.start, self.script, self.progress = start, script, progress
        self.calls = 0

    def value_and_grad(self, z: Tensor) -> tuple[float, Tensor]:
        self.calls += 1
        value = self.start if self.calls == 1 else self.script[self.progress["iteration"]]
        return value, torch.ones_like(z)


class _NoCtx:
    def step(self, *args: object, **kwargs: object) -> None:
        pass


def test_apgd_halves_the_step_by_the_papers_rule_on_a_scripted_objective() -> None:
    # 20 iterations: checkpoints 5, 9, 12, 14, 16, 18, 19; the start (value 0) is w₀
    script = [
        *[1.0, 0.5, 0.4, 0.3, 0.2],  # → w₁=5: 1 increase of 5 < 3.75: halve (1)
        *[0.1, 0.2, 0.3, 0.4],  # → w₂=9: 3 of 4 (from the restart at 1); best unchanged,
        #   but halved at w₁, so the step at w₁ ≠ the step at w₂: keep
        *[0.5, 0.6, 0.7],  # → w₃=12: 3 of 3; step and best (1) both unchanged: halve (2)
        *[2.0, 3.0],  # → w₄=14: 2 of 2, best 3: keep
        *[4.0, 3.5],  # → w₅=16: 1 of 2 < 1.5: halve (1)
        *[5.0, 6.0],  # → w₆=18: 2 of 2, best 6: keep
        7.0,  # → w₇=19: 1 of 1, same step as w₆ but the best moved: keep
        7.5,
    ]
    progress = {"iteration": 0}
    objective = _Scripted(0.0, script, progress)
    schedule: list[dict] = []
    rho = 0.1
    _, best = apgd(
        objective,  # type: ignore[arg-type]
        3,
        rho,
        "linf",
        20,
        torch.Generator().manual_seed(0),
        ctx=_NoCtx(),
        progress=progress,
        schedule=schedule,
    )
    assert [r["iteration"] for r in schedule] == [5, 9, 12, 14, 16, 18, 19]
    assert [r["halved"] for r in schedule] == [True, False, True, False, True, False, False]
    s = 2 * rho
    assert [r["step"] for r in schedule] == [s, s / 2, s / 2, s / 4, s / 4, s / 8, s / 8]
    assert [r["increases"] for r in schedule] == [1, 3, 3, 2, 1, 2, 1]
    assert [r["best"] for r in schedule] == [1.0, 1.0, 1.0, 3.0, 4.0, 6.0, 7.0]
    assert best == 7.5
    assert objective.calls == 1 + 20 + 3  # one restart per halving


def test_worst_case_linf_adaptive_matches_the_closed_form_on_a_separable_quadratic() -> None:
    d, n = 6, 32
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64)
    model = Scale(d)
    p = HessianProblem(model, [(x, y)], loss="mse")
    # L(w) = mean_{n,i} (w_i x_ni − y_ni)²: gradient g_i, Hessian diagonal h_i, so
    # max over |δ_i| ≤ ρ|w_i| of gᵀδ + ½ δᵀHδ = Σ |g_i| r_i + ½ h_i r_i², r_i = ρ|w_i|
    grad = p.gradient()
    h = torch.diag(dense_hessian(p))
    rho = 0.05
    r = rho * model.w.detach().abs()
    exact = float((grad.abs() * r + 0.5 * h * r**2).sum())
    est = sharpness(p, kind="worst", norm="linf", rho=rho, m=n, num_batches=1, iterations=20)
    assert est.value == pytest.approx(exact, rel=1e-6)


def test_worst_case_l2_standard_at_a_minimum_is_half_rho_squared_lambda_max() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64)
    y = x @ torch.randn(5, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(5, 1, bias=False).double()
    with torch.no_grad():  # the exact least-squares solution: ∇L = 0
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    p = HessianProblem(model, [(x, y)], loss="mse")
    lam = float(torch.linalg.eigvalsh(dense_hessian(p)).max())
    rho = 0.3
    est = sharpness(
        p, kind="worst", norm="l2", adaptive=False, rho=rho, m=64, num_batches=1, iterations=100
    )
    assert est.value == pytest.approx(0.5 * rho**2 * lam, rel=1e-4)


def relu_mlp() -> tuple[MLP, Tensor, Tensor]:
    torch.manual_seed(0)
    model = MLP(d_in=8, hidden=16, d_out=4, act="relu").double()
    x, y = data(256, (8,), 4, seed=2)
    return model, x, y


def rescaled(model: MLP, alpha: float) -> MLP:
    out = MLP(d_in=8, hidden=16, d_out=4, act="relu").double()
    out.load_state_dict(model.state_dict())
    with torch.no_grad():
        out.fc1.weight.mul_(alpha)
        out.fc1.bias.mul_(alpha)
        out.fc2.weight.div_(alpha)
    return out


@pytest.mark.parametrize("kind", ["worst", "average"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_adaptive_sharpness_is_invariant_to_relu_rescaling(kind: str, norm: str) -> None:
    model, x, y = relu_mlp()
    other = rescaled(model, 0.1)
    assert torch.allclose(model(x), other(x), atol=1e-12)
    kw = dict(kind=kind, norm=norm, rho=0.01, m=64, num_batches=4, iterations=10, samples=5)
    a = sharpness(HessianProblem(model, [(x, y)]), **kw)
    b = sharpness(HessianProblem(other, [(x, y)]), **kw)
    assert a.value != 0
    assert b.value == pytest.approx(a.value, rel=1e-5)
    # standard sharpness and λmax are not invariant
    s_a = sharpness(HessianProblem(model, [(x, y)]), adaptive=False, **kw)
    s_b = sharpness(HessianProblem(other, [(x, y)]), adaptive=False, **kw)
    assert abs(s_b.value - s_a.value) > 0.1 * abs(s_a.value)


def test_lambda_max_moves_under_rescaling() -> None:
    model, x, y = relu_mlp()
    lam = [
        lanczos(HessianOperator(HessianProblem(m, [(x, y)])), tol=1e-8).eigenvalues[0]
        for m in (model, rescaled(model, 0.1))
    ]
    assert lam[1] > 5 * lam[0]


def test_worst_case_at_least_average_case_at_equal_rho() -> None:
    model, x, y = relu_mlp()
    p = HessianProblem(model, [(x, y)])
    for rho in (0.005, 0.05):
        kw = dict(norm="linf", rho=rho, m=64, num_batches=4)
        worst = sharpness(p, kind="worst", iterations=20, **kw)
        average = sharpness(p, kind="average", samples=20, **kw)
        assert worst.value >= average.value
        for w_chunk, a_chunk in zip(worst.per_chunk, average.per_chunk, strict=True):
            assert w_chunk >= a_chunk
        assert worst.error_increase is not None and worst.chunks == 4


def test_weights_are_restored_and_chunks_follow_m() -> None:
    model, x, y = relu_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    p = HessianProblem(model, [(x[:200], y[:200]), (x[200:], y[200:])])
    est = sharpness(p, m=100, num_batches=8, iterations=3)
    assert est.chunks == 3 and est.examples == 256  # 100 + 100 + 56
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])

"""Generalization measures against answers known in closed form.

For a linear two-class model f(x) = Wx + b with Gaussian noise on W and b, the noise on the
logit difference of example i is Gaussian, so the expected accuracy under noise is a sum of
normal CDFs and the σ of a given accuracy drop can be solved to any precision:
    isotropic N(0, σ²I):   std of the margin noise = σ·√(2(‖xᵢ‖² + 1))
    std √(σ′²w² + ε²):     variance = σ′²(Σ_j x_ij²(W_yj² + W_oj²) + b_y² + b_o²) + 2ε²(‖xᵢ‖² + 1)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from tasks.engine.context import Cancelled
from tasks.engine.initial import InitialParamsMismatch
from tasks.engine.pacbayes import (
    jiang_term,
    kl_bernoulli,
    kl_inverse_upper,
    pacbayes_kl_bound,
    sample_convergence_upper,
)
from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure
from tests.engine.models import mlp_problem

EPS = 1e-3
TARGET = 0.1


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Thousands of tiny forward passes: one thread avoids contention on a shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------- the linear case
def linear_case(n: int = 2000, d: int = 100, flip: float = 0.1, seed: int = 0):
    """A float64 linear 2-class model and data it fits except for `flip` of the labels."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, d, generator=g, dtype=torch.float64))
        model.bias.copy_(0.5 * torch.randn(2, generator=g, dtype=torch.float64))
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    y = torch.where(torch.rand(n, generator=g) < flip, 1 - y, y)
    return model, x, y


def margins(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        out = model(x)
    return out.gather(1, y[:, None]).squeeze(1) - out.gather(1, (1 - y)[:, None]).squeeze(1)


def expected_accuracy(m: Tensor, std: Tensor) -> float:
    """E acc = mean Φ(mᵢ / stdᵢ): example i stays right when its margin outlives the noise."""
    return float(torch.special.ndtr(m / std).mean())


def iso_std(x: Tensor, sigma: float) -> Tensor:
    return sigma * torch.sqrt(2 * (x.pow(2).sum(1) + 1))


def mag_std(model: nn.Linear, x: Tensor, sigma: float, square_the_std: bool = False) -> Tensor:
    """Margin noise std for per-weight std √(σ²w² + ε²); `square_the_std` models the mistake
    of passing the variance σ²w² + ε² to the sampler as the deviation."""
    W, b = model.weight.detach(), model.bias.detach()
    weight_var = lambda w: sigma**2 * w**2 + EPS**2  # noqa: E731
    if square_the_std:
        weight_var = lambda w: (sigma**2 * w**2 + EPS**2) ** 2  # noqa: E731
    var = (x**2) @ (weight_var(W[0]) + weight_var(W[1])) + weight_var(b[0]) + weight_var(b[1])
    return var.sqrt()


def solve_sigma(acc_of: Callable[[float], float], base: float, hi: float = 2.0) -> float:
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if base - acc_of(mid) > TARGET else (mid, hi)
    return 0.5 * (lo + hi)


@pytest.fixture(scope="module")
def linear():
    model, x, y = linear_case()
    m = margins(model, x, y)
    base = float((m > 0).double().mean())
    problem = HessianProblem(model, [(x, y)], loss="cross_entropy")
    return model, x, y, m, base, problem


# Monte Carlo error of σ with 400 draws on this case is about 0.6% per standard deviation
# (per-draw accuracy sd ≈ 0.011, d acc / d ln σ ≈ −0.09); 3% is five of those.
TOL = 0.03
SAMPLES = 400


def test_pacbayes_flatness_matches_closed_form(linear) -> None:
    model, x, y, m, base, problem = linear
    exact = solve_sigma(lambda s: expected_accuracy(m, iso_std(x, s)), base)
    # noise with standard deviation σ² (variance and deviation confused) would find √σ
    assert abs(math.sqrt(exact) / exact - 1) > 3 * TOL
    res = run_measure(problem, "pacbayes_flatness", {"samples": SAMPLES})
    sigma = res["diagnostics"]["sigma"]
    assert abs(sigma / exact - 1) < TOL, (sigma, exact)
    assert res["value"] == pytest.approx(1 / sigma**2)
    assert res["converged"] is True and res["diagnostics"]["iterations"] == 15
    assert res["diagnostics"]["base_accuracy"] == pytest.approx(base)
    assert abs(res["diagnostics"]["drop_at_sigma"] - TARGET) < 0.01
    assert res["hvps"] == 0


def test_pacbayes_mag_flatness_matches_closed_form(linear) -> None:
    model, x, y, m, base, problem = linear
    exact = solve_sigma(lambda s: expected_accuracy(m, mag_std(model, x, s)), base)
    wrong = solve_sigma(lambda s: expected_accuracy(m, mag_std(model, x, s, True)), base)
    assert abs(wrong / exact - 1) > 3 * TOL  # the tolerance tells the two apart
    res = run_measure(problem, "pacbayes_mag_flatness", {"samples": SAMPLES})
    sigma = res["diagnostics"]["sigma_prime"]
    assert abs(sigma / exact - 1) < TOL, (sigma, exact, wrong)
    assert res["value"] == pytest.approx(1 / sigma**2)
    assert res["diagnostics"]["eps"] == EPS


def test_flatness_reports_progress_and_cancels(linear) -> None:
    *_, problem = linear
    seen: list[dict] = []
    res = run_measure(problem, "pacbayes_flatness", {"depth": 6}, on_progress=seen.append)
    assert [s["iteration"] for s in seen] == list(range(1, 7))
    assert res["diagnostics"]["iterations"] == 6
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        run_measure(problem, "pacbayes_flatness", {}, should_cancel=lambda: next(calls) >= 2)


def test_flatness_is_deterministic_and_warns_when_capped(linear) -> None:
    *_, problem = linear
    a = run_measure(problem, "pacbayes_flatness", {"depth": 5, "seed": 4})
    b = run_measure(problem, "pacbayes_flatness", {"depth": 5, "seed": 4})
    assert a["value"] == b["value"]
    with pytest.warns(UserWarning, match="sigma_max"):
        capped = run_measure(problem, "pacbayes_flatness", {"depth": 5, "sigma_max": 0.01})
    assert capped["converged"] is False and capped["diagnostics"]["sigma"] < 0.01
    assert any("sigma_max" in w for w in capped["warnings"])


SMALL = {
    "pacbayes_flatness": {"depth": 2, "samples": 2},
    "pacbayes_mag_flatness": {"depth": 2, "samples": 2},
    "pacbayes_bound": {"grid_size": 1, "samples": 2},
    "output_margin": {},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_classification_only(name: str) -> None:
    model = nn.Linear(3, 2).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    problem = HessianProblem(model, [(x, torch.randn(8, 2, dtype=torch.float64))], loss="mse")
    with pytest.raises(ValueError, match="cross_entropy"):
        run_measure(problem, name, SMALL[name])


# ------------------------------------------------------------------------------- kl⁻¹
@pytest.mark.parametrize("c", [1e-6, 0.01, 0.3, 2.0])
def test_kl_inverse_at_zero_error_is_closed_form(c: float) -> None:
    # kl(0 ‖ p) = −ln(1 − p), so kl⁻¹(0 | c) = 1 − e^{−c}
    assert kl_inverse_upper(0.0, c) == pytest.approx(1 - math.exp(-c), abs=1e-11)


@pytest.mark.parametrize("q", [0.01, 0.1, 0.37, 0.8])
@pytest.mark.parametrize("c", [1e-4, 0.02, 0.5])
def test_kl_inverse_solves_kl_equation(q: float, c: float) -> None:
    p = kl_inverse_upper(q, c)
    assert q <= p <= 1
    if p < 1:
        assert kl_bernoulli(q, p) == pytest.approx(c, rel=1e-8, abs=1e-12)
    assert kl_bernoulli(q, max(q, p - 1e-6)) <= c  # the largest such p: just below is inside


def test_kl_inverse_monotone_and_edges() -> None:
    cs = [0.0, 1e-3, 0.01, 0.1, 1.0]
    for q in (0.0, 0.05, 0.5):
        ps = [kl_inverse_upper(q, c) for c in cs]
        assert ps == sorted(ps) and ps[0] == pytest.approx(q, abs=1e-11)
    qs = [0.0, 0.1, 0.2, 0.5, 0.9]
    ps = [kl_inverse_upper(q, 0.05) for q in qs]
    assert ps == sorted(ps)
    assert kl_inverse_upper(1.0, 0.1) == 1.0
    assert kl_inverse_upper(0.3, 50.0) == 1.0
    assert kl_bernoulli(0.2, 0.2) == 0.0 and kl_bernoulli(0.0, 1.0) == math.inf


def test_bound_formulae() -> None:
    m, delta = 10_000, 0.025
    b = pacbayes_kl_bound(0.05, 100.0, m, delta)
    assert kl_bernoulli(0.05, b) == pytest.approx((100 + math.log(2 * math.sqrt(m) / delta)) / m)
    assert sample_convergence_upper(0.05, 1000, 0.01) > 0.05
    assert jiang_term(4.0, 0.5, 100) == pytest.approx(
        math.sqrt((4 / (4 * 0.25) + math.log(100 / 0.5) + 10) / 100)
    )


# ------------------------------------------------------------------------ pacbayes_bound
def test_pacbayes_bound_recomputes_from_its_diagnostics(linear) -> None:
    model, x, y, m, base, problem = linear
    init = {"weight": model.weight.detach() * 0.9, "bias": model.bias.detach() * 0.9}
    params = {"samples": 50, "grid_size": 4, "sigma_min": 0.01, "sigma_max": 0.3}
    res = run_measure(problem, "pacbayes_bound", params, initial_params=init)
    d = res["diagnostics"]
    assert d["kind"] == "bound" and "not a prediction" in d["label"]
    assert d["m"] == 2000 and d["prior_mean"] == "initial_model"
    dist_sq = 0.01 * float(model.weight.detach().pow(2).sum() + model.bias.detach().pow(2).sum())
    assert d["distance_from_prior"] == pytest.approx(math.sqrt(dist_sq))
    assert d["kl"] == pytest.approx(dist_sq / (2 * d["sigma"] ** 2))
    k = params["grid_size"]
    assert d["error_upper"] == pytest.approx(
        sample_convergence_upper(d["error_mean"], 50, d["delta_prime"] / k)
    )
    assert res["value"] == pytest.approx(
        pacbayes_kl_bound(d["error_upper"], d["kl"], 2000, d["delta"] / k)
    )
    assert d["error_mean"] <= d["error_upper"] <= res["value"] <= 1
    assert res["value"] == min(row["bound"] for row in d["grid"])
    assert "pacbayes_orig" not in d  # Jiang's term is at the flatness σ: its own measure
    # the Monte Carlo error of Q at each σ agrees with the closed form 1 − mean Φ(mᵢ/stdᵢ)
    for row in d["grid"]:
        exact = 1 - expected_accuracy(m, iso_std(x, row["sigma"]))
        assert abs(row["error_mean"] - exact) < 0.02, (row, exact)


def test_pacbayes_bound_without_initial_model_warns() -> None:
    _, problem = mlp_problem(64)
    with pytest.warns(UserWarning, match="prior is centred at 0"):
        res = run_measure(problem, "pacbayes_bound", {"samples": 5, "grid_size": 2})
    assert res["diagnostics"]["prior_mean"] == "zero"
    assert any("centred at 0" in w for w in res["warnings"])
    assert 0 <= res["diagnostics"]["error_mean"] <= res["value"] <= 1


def test_pacbayes_bound_params_refused() -> None:
    from pydantic import ValidationError

    from tasks.engine.registry import validate_params

    with pytest.raises(ValidationError):
        validate_params("pacbayes_bound", {"sigma_min": 2.0, "sigma_max": 1.0})
    with pytest.raises(ValidationError):
        validate_params("pacbayes_bound", {"delta": 0})


# ------------------------------------------------------------------------- weight norms
def test_weight_norms_by_hand() -> None:
    model, problem = mlp_problem()
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    sq = {n: float(t.pow(2).sum()) for n, t in state.items()}
    res = run_measure(problem, "weight_norms")
    assert res["value"] == pytest.approx(math.sqrt(sum(sq.values())), rel=1e-12)
    d = res["diagnostics"]
    assert d["sum_of_squared_frobenius"] == pytest.approx(sum(sq.values()), rel=1e-12)
    assert d["per_tensor"]["fc1.weight"] == pytest.approx(math.sqrt(sq["fc1.weight"]))
    assert d["distance_from_init"] is None and "w₀" in d["note"]
    assert res["hvps"] == 0

    init_model, _ = mlp_problem(seed=1)
    init = init_model.state_dict()
    dist = math.sqrt(sum(float((state[n] - init[n]).pow(2).sum()) for n in state))
    res = run_measure(problem, "weight_norms", initial_params=init)
    assert res["diagnostics"]["distance_from_init"] == pytest.approx(dist, rel=1e-12)
    fc1 = run_measure(problem, "weight_norms", {"parameters": ["fc1.*"]}, initial_params=init)
    assert fc1["value"] == pytest.approx(math.sqrt(sq["fc1.weight"] + sq["fc1.bias"]))
    assert set(fc1["diagnostics"]["per_tensor_distance"]) == {"fc1.weight", "fc1.bias"}


def test_initial_params_that_do_not_fit_are_refused() -> None:
    model, problem = mlp_problem()
    wrong_shape = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrong_shape["fc2.weight"] = torch.zeros(3, 7, dtype=torch.float64)
    with pytest.raises(InitialParamsMismatch, match=r"'fc2.weight' has shape \(3, 7\)"):
        run_measure(problem, "weight_norms", initial_params=wrong_shape)
    missing = {n: p for n, p in wrong_shape.items() if n != "fc1.bias"}
    with pytest.raises(InitialParamsMismatch, match="lack.*'fc1.bias'"):
        run_measure(problem, "weight_norms", initial_params=missing)
    extra = {**model.state_dict(), "fc3.weight": torch.zeros(1)}
    with pytest.raises(InitialParamsMismatch, match="'fc3.weight'"):
        run_measure(problem, "weight_norms", initial_params=extra)


# ------------------------------------------------------------------------------ margins
def test_output_margin_by_hand() -> None:
    # f(x) = x (identity logits over 3 classes): the margin is x[y] − max of the others
    model = nn.Linear(3, 3, bias=True).double()
    with torch.no_grad():
        model.weight.copy_(torch.eye(3, dtype=torch.float64))
        model.bias.zero_()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (50,), generator=g)
    gamma = []
    for xi, yi in zip(x.tolist(), y.tolist(), strict=True):
        gamma.append(xi[yi] - max(v for j, v in enumerate(xi) if j != yi))
    gamma = np.array(gamma)
    problem = HessianProblem(model, [(x[:20], y[:20]), (x[20:], y[20:])])
    res = run_measure(problem, "output_margin")
    assert res["value"] == pytest.approx(np.percentile(gamma, 10), rel=1e-12)
    d = res["diagnostics"]
    assert d["mean"] == pytest.approx(gamma.mean()) and d["median"] == pytest.approx(
        np.median(gamma)
    )
    assert d["share_negative"] == pytest.approx((gamma < 0).mean()) and d["examples"] == 50
    res = run_measure(problem, "output_margin", {"percentile": 50, "max_examples": 30})
    assert res["value"] == pytest.approx(np.median(gamma[:30]))


def test_measures_leave_the_weights_alone(linear) -> None:
    model, *_, problem = linear
    before = [p.detach().clone() for p in model.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_measure(problem, "pacbayes_mag_flatness", {"depth": 3, "samples": 3})
        run_measure(problem, "pacbayes_bound", {"grid_size": 2, "samples": 3})
    for b, p in zip(before, model.parameters(), strict=True):
        assert torch.equal(b, p)

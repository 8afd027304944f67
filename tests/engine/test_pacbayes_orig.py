"""pacbayes_orig at Jiang et al.'s σ, on a model where that σ has a closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure


class Signed(nn.Module):
    """Logits (w·x, −w·x) of one weight w: with x > 0 and every label 0, each draw of noise
    classifies all examples right (w + σz > 0) or all wrong, so the Monte Carlo accuracy at σ
    over the draws z₁ … z_S is 1 − #{s : w + σ z_s ≤ 0}/S exactly."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w], dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.w * x, -self.w * x], dim=1)


def _problem(w: float, m: int) -> HessianProblem:
    x = torch.linspace(0.5, 2.0, m, dtype=torch.float64).reshape(m, 1)
    return HessianProblem(Signed(w), [(x, torch.zeros(m, dtype=torch.long))])


def _sigma_star(w: float, samples: int, seed: int, drop: float) -> float:
    """The noise level where the accuracy drop first exceeds `drop`: the drop is k/S once
    σ > w/|z| for the k most negative draws z, so it exceeds `drop` past w/|z_(k)| with
    k = ⌊drop·S⌋ + 1 (the same draws as the measure: one float64 normal per draw)."""
    gen = torch.Generator().manual_seed(seed)
    z = sorted(float(torch.randn(1, generator=gen, dtype=torch.float64)) for _ in range(samples))
    k = math.floor(drop * samples) + 1
    assert z[k - 1] < 0, "the seed must give enough negative draws"
    return w / abs(z[k - 1])


@pytest.mark.parametrize(("w", "m", "seed"), [(0.4, 50, 0), (1.3, 200, 3)])
def test_pacbayes_orig_is_jiangs_term_at_the_flatness_sigma(w: float, m: int, seed: int) -> None:
    samples, drop, depth, sigma_max = 10, 0.1, 40, 8.0
    sigma = _sigma_star(w, samples, seed, drop)
    assert sigma < sigma_max
    params = {"samples": samples, "depth": depth, "sigma_max": sigma_max, "seed": seed}
    res = run_measure(_problem(w, m), "pacbayes_orig", params, initial_params={"w": Tensor([0.1])})
    d = res["diagnostics"]
    # bisection: the midpoint of the last bracket is within σ_max/2^(depth+1) of σ*
    assert abs(d["sigma"] - sigma) <= sigma_max / 2 ** (depth + 1)
    expected = math.sqrt((w * w / (4 * sigma * sigma) + math.log(m / sigma) + 10) / m)
    assert res["value"] == pytest.approx(expected, rel=1e-9)
    init = math.sqrt(((w - 0.1) ** 2 / (4 * sigma * sigma) + math.log(m / sigma) + 10) / m)
    assert d["pacbayes_init"] == pytest.approx(init, rel=1e-9)
    assert d["pacbayes_flatness"] == pytest.approx(1 / sigma**2, rel=1e-9)
    assert d["m"] == m and res["converged"] is True


def test_pacbayes_orig_uses_the_first_max_examples_and_refuses_mse() -> None:
    w, seed = 0.4, 0
    sigma = _sigma_star(w, 10, seed, 0.1)
    res = run_measure(_problem(w, 300), "pacbayes_orig", {"max_examples": 120, "depth": 40})
    assert res["diagnostics"]["m"] == 120
    expected = math.sqrt((w * w / (4 * sigma * sigma) + math.log(120 / sigma) + 10) / 120)
    assert res["value"] == pytest.approx(expected, rel=1e-9)
    assert "pacbayes_init" not in res["diagnostics"]
    x = torch.randn(8, 3, dtype=torch.float64)
    mse = HessianProblem(
        nn.Linear(3, 2).double(), [(x, torch.randn(8, 2, dtype=torch.float64))], "mse"
    )
    with pytest.raises(ValueError, match="cross_entropy"):
        run_measure(mse, "pacbayes_orig")

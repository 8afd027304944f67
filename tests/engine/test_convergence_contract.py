"""The convergence contract (tasks/engine/convergence.py) over every registered measure.

converged True ⇔ diagnostics.limited_by is "tolerance" or "<dtype> rounding"; converged
False ⇒ limited_by names a budget, and a NotConvergedWarning was raised; converged None ⇒
not an iterative estimate, no limited_by. Each iterative measure is run once at its defaults
and once with a budget too small, on a float32 MLP (so the rounding clause is exercised).
Also: float64 models converge at the default tol to 1e-8 relative and below, and the
trajectory's eigenpairs follow the same contract.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from tasks.engine import registry
from tasks.engine.convergence import (
    BUDGETS,
    ITERATION_BUDGET,
    SEARCH_RANGE,
    TOLERANCE,
    NotConvergedWarning,
    classify,
    default_tol,
    is_converged,
    rounding,
    worst,
)
from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure
from tasks.engine.trajectory import top_eigenpairs
from tests.engine.cases import dense_case
from tests.engine.models import make

# (measure, params, what converged must be: True, False or None; None in the third place
# means either True or None is accepted)
CASES: list[tuple[str, dict[str, Any], bool | None]] = [
    ("lambda_max", {}, True),
    ("lambda_max", {"most_negative": True}, True),
    ("lambda_max", {"max_iter": 2}, False),
    ("top_eigenvalues", {"k": 3}, True),
    ("top_eigenvalues", {"k": 3, "max_iter": 3}, False),
    ("preconditioned_lambda_max", {}, True),
    ("preconditioned_lambda_max", {"max_iter": 2}, False),
    ("trace", {"num_hvps": 30}, None),
    ("trace", {"method": "hutchinson", "num_hvps": 12, "rtol": 1e-9}, False),
    ("frobenius", {"num_hvps": 30}, None),
    ("frobenius", {"num_hvps": 4, "rtol": 1e-9}, False),
    ("spectral_density", {"runs": 2, "steps": 10, "grid_points": 50}, None),
    ("adaptive_sharpness", {"m": 32, "num_batches": 2, "iterations": 5}, None),
    ("weight_norms", {}, None),
    ("output_margin", {}, None),
    ("pacbayes_flatness", {"depth": 5}, True),
    ("pacbayes_flatness", {"depth": 5, "sigma_max": 1e-4}, False),
    ("pacbayes_mag_flatness", {"depth": 5}, True),
    ("pacbayes_mag_flatness", {"depth": 5, "sigma_max": 1e-4}, False),
    ("pacbayes_orig", {"depth": 5}, True),
    ("pacbayes_orig", {"depth": 5, "sigma_max": 1e-4}, False),
    ("pacbayes_bound", {"samples": 5, "grid_size": 2}, None),
]


def float32_mlp() -> HessianProblem:
    """A float32 tanh MLP fitted (200 Adam steps) to labels it can learn, so that weight
    noise can cost the PAC-Bayes searches their target accuracy drop."""
    model, batches, loss = make("mlp_tanh")
    model = model.float()
    x = batches[0][0].float()
    y = (x @ torch.randn(4, 3, generator=torch.Generator().manual_seed(0))).argmax(1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return HessianProblem(model.eval(), [(x, y)], loss)


def adam_state(p: HessianProblem) -> dict[str, torch.Tensor]:
    state = {f"exp_avg_sq.{n}": torch.ones_like(q) for n, q in zip(p.names, p.params, strict=True)}
    state["step"] = torch.tensor([10.0])
    return state


def check(result: dict[str, Any], name: str) -> None:
    converged = result["converged"]
    d = result["diagnostics"]
    limited_by = d.get("limited_by")
    if converged is None:
        assert limited_by is None, (name, limited_by)
    elif converged:
        assert limited_by is not None and is_converged(limited_by), (name, limited_by)
    else:
        assert limited_by in BUDGETS, (name, limited_by)
    not_converged = [w for w in result["warnings"] if w.startswith("NotConvergedWarning")]
    assert bool(not_converged) == (converged is False), (name, result["warnings"])
    if "most_negative_converged" in d:
        assert d["most_negative_converged"] == is_converged(d["most_negative_limited_by"])
    if "limited_by_each" in d:
        assert limited_by == worst(d["limited_by_each"])


def test_every_registered_measure_is_covered() -> None:
    assert {name for name, _, _ in CASES} == set(registry.measures())


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [pytest.param(*case, id=f"{case[0]}-{i}") for i, case in enumerate(CASES)],
)
def test_converged_and_limited_by_agree(name: str, params: dict, expected: bool | None) -> None:
    p = float32_mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # recorded in result["warnings"] all the same
        result = run_measure(p, name, params, optimizer_state=adam_state(p))
    assert result["converged"] is expected, (name, params, result["diagnostics"])
    check(result, name)
    if expected is False and name in ("lambda_max", "top_eigenvalues"):
        assert result["diagnostics"]["limited_by"] == ITERATION_BUDGET
        assert any(f"max_iter={params['max_iter']}" in w for w in result["warnings"])
    if expected is False and name.startswith("pacbayes"):
        assert result["diagnostics"]["limited_by"] == SEARCH_RANGE
        assert any("raise sigma_max" in w for w in result["warnings"])
    if expected is True and name in ("lambda_max", "top_eigenvalues"):
        # a float32 model at the default tol stops at its rounding floor
        assert result["diagnostics"]["limited_by"] == "float32 rounding"


@pytest.mark.parametrize("name", ["cnn_bn", "transformer", "mlp_relu"])
def test_float64_models_converge_below_1e_8_at_the_default_tol(name: str) -> None:
    case = dense_case(name)
    p, exact = case.problem(), case.top
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotConvergedWarning)
        lam = run_measure(p, "lambda_max", {})
        top = run_measure(p, "top_eigenvalues", {"k": 3})
    assert lam["converged"] and lam["diagnostics"]["tol"] == 1e-10
    assert lam["diagnostics"]["limited_by"] in (TOLERANCE, "float64 rounding")
    assert abs(lam["value"] - float(exact[0])) <= 1e-8 * abs(float(exact[0]))
    assert top["converged"] and top["diagnostics"]["limited_by"] in (TOLERANCE, "float64 rounding")
    for got, lam_i in zip(top["value"], exact[:3].tolist(), strict=True):
        assert abs(got - lam_i) <= 1e-8 * abs(float(exact[0]))


def test_trajectory_eigenpairs_follow_the_contract() -> None:
    p = float32_mlp()
    pairs = top_eigenpairs(p, k=3)
    assert pairs.converged and pairs.limited_by == "float32 rounding"
    with pytest.warns(NotConvergedWarning, match="max_iter=3"):
        short = top_eigenpairs(p, k=3, max_iter=3)
    assert not short.converged and short.limited_by == ITERATION_BUDGET


def test_the_vocabulary() -> None:
    assert rounding(torch.float32) == "float32 rounding"
    assert default_tol(torch.float64) == 1e-10 and default_tol(torch.float32) == 0.0
    assert classify(1e-9, 1e-8, 1e-7, torch.float32) == TOLERANCE
    assert classify(3e-7, 1e-8, 1e-7, torch.float32) == "float32 rounding"
    assert classify(5e-7, 1e-8, 1e-7, torch.float32) == ITERATION_BUDGET
    assert worst([TOLERANCE, "float32 rounding"]) == "float32 rounding"
    assert worst([TOLERANCE, ITERATION_BUDGET, "float32 rounding"]) == ITERATION_BUDGET
    assert worst([TOLERANCE, TOLERANCE]) == TOLERANCE
    assert all(not is_converged(b) for b in BUDGETS)

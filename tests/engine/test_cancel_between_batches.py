"""A cancel stops a measure between batches, not only at its next iteration (ctx.step): the
problem and the operators ask the measure's `should_cancel` before each batch's forward pass
and each backward pass through a kept graph (tasks.engine.cancel). A measure whose one
product takes minutes therefore stops within one batch's pass of the request."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tasks.engine import registry
from tasks.engine.cancel import checkpoint
from tasks.engine.context import Cancelled
from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure
from tests.engine.models import make

LONG = 10_000  # products or iterations: a run that would take minutes

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "lambda_max": ("lambda_max", {"max_iter": LONG, "tol": 1e-30}),
    "lambda_max ggn": ("lambda_max", {"max_iter": LONG, "tol": 1e-30, "curvature": "ggn"}),
    "lambda_max per_layer": ("lambda_max", {"max_iter": LONG, "tol": 1e-30, "per_layer": True}),
    "top_eigenvalues": ("top_eigenvalues", {"k": 3, "max_iter": LONG, "tol": 1e-30}),
    "trace hutchinson": ("trace", {"method": "hutchinson", "num_hvps": LONG, "rtol": None}),
    "trace hutch++": ("trace", {"method": "hutch++", "num_hvps": 60, "rtol": None}),
    "trace xtrace": ("trace", {"method": "xtrace", "num_hvps": 60, "rtol": None}),
    "trace krylov": ("trace", {"method": "krylov", "num_hvps": 60, "rtol": None}),
    "frobenius": ("frobenius", {"num_hvps": LONG, "rtol": None}),
    "spectral_density": ("spectral_density", {"runs": 50, "steps": 30}),
    "adaptive_sharpness": ("adaptive_sharpness", {"iterations": LONG}),
    "pacbayes_flatness": ("pacbayes_flatness", {"samples": LONG}),
    "pacbayes_mag_flatness": ("pacbayes_mag_flatness", {"samples": LONG}),
    "pacbayes_orig": ("pacbayes_orig", {"samples": LONG}),
    "pacbayes_bound": ("pacbayes_bound", {"samples": LONG}),
    "output_margin": ("output_margin", {}),
    "preconditioned_lambda_max": ("preconditioned_lambda_max", {"max_iter": LONG, "tol": 1e-30}),
}


def problem() -> HessianProblem:
    model, batches, loss = make("mlp_tanh")
    # four batches: a product is four forward and backward passes
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    n = len(x) // 4
    return HessianProblem(model, [(x[i : i + n], y[i : i + n]) for i in range(0, 4 * n, n)], loss)


def test_the_cases_cover_every_measure_with_a_batch_pass() -> None:
    # weight_norms reads the weights only: its one step is its whole cost
    assert {name for name, _ in CASES.values()} | {"weight_norms"} == set(registry.measures())


@pytest.mark.parametrize("case", list(CASES))
def test_a_cancel_stops_the_measure_inside_its_first_iteration(case: str) -> None:
    """should_cancel says yes from its second question on: the measure stops there, before
    it reports a single iteration (with ctx.step alone it would run a whole block first), and
    leaves the model's weights as they were."""
    name, params = CASES[case]
    p = problem()
    asked: list[int] = []
    progress: list[dict[str, Any]] = []

    def should_cancel() -> bool:
        asked.append(1)
        return len(asked) >= 2

    kw: dict[str, Any] = {}
    if name == "pacbayes_bound":
        kw["initial_params"] = {k: v.detach() * 0.9 for k, v in p.module.named_parameters()}
    if name == "preconditioned_lambda_max":
        kw["optimizer_state"] = {
            **{f"exp_avg_sq.{k}": torch.rand_like(v) for k, v in p.module.named_parameters()},
            "step": torch.tensor([10.0]),
        }
    before = {k: v.detach().clone() for k, v in p.module.state_dict().items()}
    with pytest.raises(Cancelled):
        run_measure(p, name, params, progress.append, should_cancel, **kw)
    assert len(asked) == 2  # stopped at the first yes
    assert not [i for i in progress if i.get("iteration")], progress
    after = p.module.state_dict()  # a perturbation in flight is undone
    assert all(torch.equal(before[k], after[k]) for k in before), case


def test_outside_a_measure_checkpoint_asks_nothing() -> None:
    checkpoint()  # no measure runs: nothing to ask, nothing raised
    p = problem()
    p.loss()  # forward passes outside a measure


def test_a_measure_not_cancelled_runs_to_its_end_asking_between_batches() -> None:
    p = problem()
    asked: list[int] = []

    def should_cancel() -> bool:
        asked.append(1)
        return False

    result = run_measure(p, "trace", {"method": "hutchinson", "num_hvps": 10}, None, should_cancel)
    assert result["hvps"] >= 10
    assert len(asked) > result["hvps"]  # more often than once per product

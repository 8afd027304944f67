"""The registry's measures through run_measure: results, per-layer blocks, progress, modes."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from tasks.engine import registry
from tasks.engine.context import Cancelled
from tasks.engine.problem import HessianProblem, TrainModeWarning
from tasks.engine.runner import run_measure
from tests.engine.models import make
from tests.engine.reference import dense_hessian

QUICK = {
    "lambda_max": {"tol": 1e-8, "most_negative": True},
    "top_eigenvalues": {"k": 3, "tol": 1e-8},
    "trace": {"num_hvps": 30},
    "frobenius": {"num_hvps": 30},
    "spectral_density": {"runs": 2, "steps": 10, "grid_points": 50},
    "adaptive_sharpness": {"m": 32, "num_batches": 2, "iterations": 5},
}


def mlp_problem() -> HessianProblem:
    model, batches, loss = make("mlp_tanh")
    return HessianProblem(model, batches, loss)


def test_every_registered_measure_runs_and_is_json() -> None:
    assert set(QUICK) <= set(registry.measures())
    p = mlp_problem()
    evals = torch.linalg.eigvalsh(dense_hessian(p))
    # Adam's state for preconditioned_lambda_max: v = 1 everywhere after 10 steps
    state = {f"exp_avg_sq.{n}": torch.ones_like(q) for n, q in zip(p.names, p.params, strict=True)}
    state["step"] = torch.tensor([10.0])
    for name in registry.measures():
        events: list[dict] = []
        result = run_measure(
            p, name, QUICK.get(name, {}), on_progress=events.append, optimizer_state=state
        )
        json.dumps(result)
        assert events, name
        assert result["diagnostics"]["mode"] == "eval"
        assert result["seconds"] > 0
    lam = run_measure(p, "lambda_max", QUICK["lambda_max"])
    assert lam["value"] == pytest.approx(float(evals[-1]), rel=1e-6)
    assert lam["diagnostics"]["most_negative"] == pytest.approx(
        float(evals[0]), abs=1e-6 * float(evals.abs().max())
    )
    top = run_measure(p, "top_eigenvalues", QUICK["top_eigenvalues"])
    assert top["value"] == pytest.approx(evals.flip(0)[:3].tolist(), rel=1e-6)


def test_per_layer_blocks_match_the_dense_diagonal_blocks() -> None:
    p = mlp_problem()
    H = dense_hessian(p)
    result = run_measure(p, "lambda_max", {"tol": 1e-9, "per_layer": True})
    assert set(result["per_layer"]) == {"fc1", "fc2"}
    offset = 0
    for block in ("fc1", "fc2"):
        n = sum(
            q.numel() for name, q in zip(p.names, p.params, strict=True) if name.startswith(block)
        )
        sub = H[offset : offset + n, offset : offset + n]
        offset += n
        exact = float(torch.linalg.eigvalsh(sub).max())
        assert result["per_layer"][block]["value"] == pytest.approx(exact, rel=1e-6)
        assert result["per_layer"][block]["diagnostics"]["dim"] == n


def test_parameter_patterns_restrict_the_hessian() -> None:
    p = mlp_problem()
    H = dense_hessian(p)
    n = p.numels[0]  # fc1.weight comes first
    result = run_measure(
        p, "trace", {"parameters": ["fc1.weight"], "method": "hutch++", "num_hvps": n * 3}
    )
    assert result["value"] == pytest.approx(float(torch.trace(H[:n, :n])), rel=1e-8)
    with pytest.raises(ValueError, match="no parameter matches"):
        run_measure(p, "trace", {"parameters": ["nope.*"]})


def test_bad_params_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValidationError, match="k"):
        run_measure(mlp_problem(), "top_eigenvalues", {"k": 0})
    with pytest.raises(KeyError, match="known measures"):
        run_measure(mlp_problem(), "nope", {})


def test_cancellation_through_the_runner() -> None:
    with pytest.raises(Cancelled):
        run_measure(mlp_problem(), "trace", {"num_hvps": 100}, should_cancel=lambda: True)


def test_train_mode_warns_states_mode_and_restores_running_statistics() -> None:
    model, batches, loss = make("cnn_bn")
    before = model.bn.running_mean.clone()
    with pytest.warns(TrainModeWarning):
        p = HessianProblem(model, batches, loss, mode="train")
    result = run_measure(p, "lambda_max", {"tol": 1e-6})
    assert result["diagnostics"]["mode"] == "train"
    assert any("train mode" in w for w in result["warnings"])
    assert torch.equal(model.bn.running_mean, before)
    # train mode differs from eval mode for BatchNorm
    ev = run_measure(HessianProblem(model, batches, loss), "lambda_max", {"tol": 1e-6})
    assert abs(ev["value"] - result["value"]) > 1e-6 * abs(ev["value"])


def test_exported_model_without_mode_dependent_layers_gives_no_mode_warning() -> None:
    model, batches, loss = make("mlp_tanh")
    exported = torch.export.export(model.eval(), (batches[0][0],))
    result = run_measure(HessianProblem(exported, batches, loss), "lambda_max", {"tol": 1e-8})
    assert not any("mode" in w for w in result["warnings"])
    assert result["diagnostics"]["mode"] == "eval"

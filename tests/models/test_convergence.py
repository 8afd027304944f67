"""The convergence contract on models people train, at the default parameters.

λmax and the top 3 of float32 transformers (BERT, GPT-2), an LSTM, a ResNet and the
quickstart's digits MLP, measured with every parameter at its default: `converged` is true,
no NotConvergedWarning is raised, `limited_by` says why the run stopped, and the true error
(against the float64 copy's eigenvalues, eigsh on double-backward products; every float32
weight and input is exactly a float64, so that is the measured model's true Hessian) is
within the reported error estimate. A run stopped by max_iter says so.
"""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tasks.engine.convergence import ITERATION_BUDGET, NotConvergedWarning, is_converged
from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure
from tasks.worker.datasets import load_dataset
from tests.models import cases

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def quickstart() -> cases.Case:
    """The quickstart's model and data (examples/quickstart_data.py): the digits MLP trained
    for 40 epochs, all 1797 digits."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        from digits_mlp import load, train
    finally:
        sys.path.remove(str(EXAMPLES))
    x, y = load()
    model = train(x, y, epochs=40)
    arrays = {"inputs": x.numpy(), "targets": y.numpy()}

    def ref(m: torch.nn.Module) -> torch.Tensor:
        return F.cross_entropy(m(torch.from_numpy(arrays["inputs"]).double()), y)

    return cases.Case("quickstart", model, arrays, "inputs", "targets", ref, batch_size=512)


MODELS = {
    "bert": cases.bert,
    "gpt2": cases.gpt2,
    "lstm": cases.lstm,
    "resnet-eval": cases.ALL["resnet-eval"],
    "quickstart": quickstart,
}


def problem_of(case: cases.Case, tmp_path: Path) -> HessianProblem:
    """The case's float32 model on its arrays, batched as the worker batches them."""
    path = tmp_path / f"{case.name}.npz"
    np.savez(path, **case.arrays)
    batches = load_dataset(
        path,
        None,
        inputs_key=case.inputs_key,
        targets_key=case.targets_key,
        batch_size=case.batch_size,
        loss=case.loss,
    )
    job = {k: case.job[k] for k in ("output_key", "class_dim") if k in case.job}
    return HessianProblem(copy.deepcopy(case.model), batches, case.loss, case.mode, **job)


def quietly(problem: HessianProblem, name: str, params: dict) -> dict:
    """run_measure, failing on any NotConvergedWarning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_measure(problem, name, params)
    raised = [str(w.message) for w in caught if issubclass(w.category, NotConvergedWarning)]
    assert not raised, raised
    assert not any("NotConvergedWarning" in w for w in result["warnings"]), result["warnings"]
    return result


@pytest.mark.parametrize("name", list(MODELS))
def test_default_parameters_converge_within_the_error_estimate(name: str, tmp_path) -> None:
    case = MODELS[name]()
    problem = problem_of(case, tmp_path)
    assert problem.dtype == torch.float32
    exact = cases.reference_eigenvalues(case, k=3)

    lam = quietly(problem, "lambda_max", {})
    d = lam["diagnostics"]
    assert lam["converged"] is True, (name, d["limited_by"], d["error_estimate"])
    assert d["limited_by"] in ("tolerance", "float32 rounding")
    assert abs(lam["value"] - exact[0]) <= d["error_estimate"], (name, lam["value"], exact[0])

    top = quietly(problem, "top_eigenvalues", {"k": 3})
    d = top["diagnostics"]
    assert top["converged"] is True, (name, d["limited_by_each"], d["error_estimates"])
    assert all(is_converged(v) for v in d["limited_by_each"]) and len(d["limited_by_each"]) == 3
    err = np.abs(np.asarray(top["value"]) - exact)
    assert (err <= np.asarray(d["error_estimates"])).all(), (name, err, d["error_estimates"])
    # the estimate is not a blanket: a few float32 units of ‖H‖ at most
    assert max(d["error_estimates"]) <= 40 * torch.finfo(torch.float32).eps * abs(exact[0])


def test_a_run_stopped_by_max_iter_says_so(tmp_path) -> None:
    problem = problem_of(cases.lstm(), tmp_path)
    with pytest.warns(NotConvergedWarning, match=r"max_iter=3\b") as caught:
        res = run_measure(problem, "top_eigenvalues", {"k": 3, "max_iter": 3})
    assert res["converged"] is False
    assert res["diagnostics"]["limited_by"] == ITERATION_BUDGET
    assert res["diagnostics"]["iterations"] == 3
    text = str(caught[0].message)
    assert "iteration budget" in text and "after 3 steps" in text and "raise max_iter" in text
    assert "lower bound" not in text

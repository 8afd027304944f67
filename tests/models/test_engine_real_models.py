"""Real architectures through the engine, from exported programs: what the service-level test
(tests/integration/test_real_models.py, every case against a float64 reference) does not show.

Each tied weight once under all its names; a language model's loss averaged over its counted
tokens across uneven batches; the mode of an exported graph read and rewritten; BatchNorm in
train mode from TorchScript, with the running statistics untouched.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tasks.engine.problem import HessianProblem
from tasks.engine.runner import run_measure
from tasks.worker.datasets import load_dataset, probe
from tasks.worker.loaders import LoadedModel
from tests.models import cases


def export(case: cases.Case, batches) -> torch.export.ExportedProgram:
    """A torch.export program with a dynamic batch, in the mode the case's model is in."""
    model = copy.deepcopy(case.model)
    first = batches[0].inputs
    batch = torch.export.Dim("batch")
    if isinstance(first, dict):
        return torch.export.export(model, (), first, dynamic_shapes={k: {0: batch} for k in first})
    args = first if isinstance(first, tuple) else (first,)
    return torch.export.export(model, args, dynamic_shapes=tuple({0: batch} for _ in args))


def _batches(case: cases.Case, tmp_path: Path, **kwargs: Any) -> tuple[Path, Any]:
    """The case's arrays written to an .npz and loaded as the worker loads a dataset."""
    path = tmp_path / f"{case.name}.npz"
    np.savez(path, **case.arrays)
    return path, load_dataset(
        path,
        None,
        inputs_key=case.inputs_key,
        targets_key=case.targets_key,
        batch_size=case.batch_size,
        **kwargs,
    )


def measure(case: cases.Case, tmp_path: Path, via_export: bool = True):
    path, batches = _batches(case, tmp_path, loss=case.loss)
    model = export(case, batches) if via_export else copy.deepcopy(case.model)
    module = model.module() if via_export else model
    probe(LoadedModel(module, "torch_export"), batches, path.name, case.loss, **_job(case))
    problem = HessianProblem(module, batches, case.loss, case.mode, **_job(case))
    return problem, run_measure(problem, "top_eigenvalues", {"k": 3, "tol": 1e-9})


def _job(case: cases.Case) -> dict:
    return {k: case.job[k] for k in ("output_key", "class_dim") if k in case.job}


def test_tied_weight_is_one_parameter_with_every_name(tmp_path: Path) -> None:
    case = cases.tied_lm()
    problem, result = measure(case, tmp_path)
    assert problem.aliases == {"embed.weight": ["embed.weight", "out.weight"]}
    assert result["diagnostics"]["objective"]["tied_parameters"] == problem.aliases
    norms = run_measure(problem, "weight_norms", {})
    assert norms["value"] == pytest.approx(cases.weight_norm(case.model), rel=1e-6)


def test_language_model_averages_over_counted_tokens(tmp_path: Path) -> None:
    """Batches of 5, 5 and 2 sequences with different numbers of -100 labels give exactly
    the one-batch token mean of the reference."""
    case = cases.gpt2()
    problem, _ = measure(case, tmp_path)
    counted = int((case.arrays["labels"] != -100).sum())
    assert problem.num_targets == counted
    model64 = copy.deepcopy(case.model).double()
    assert problem.loss() == pytest.approx(float(case.reference_loss(model64)), rel=1e-6)
    d = problem.describe()
    assert d["class_dim"] == "last" and d["num_targets"] == counted


def test_exported_in_train_mode_measured_in_the_requested_mode(tmp_path: Path) -> None:
    """A model exported in train mode and measured with mode 'eval' is measured in eval mode
    (its graph rewritten) and says so; the eigenvalues are those of the eval reference."""
    case = cases.bn_cnn("eval")
    case.model.train()
    problem, result = measure(case, tmp_path)
    case.model.eval()
    assert result["diagnostics"]["mode"] == "eval"
    assert "rewritten" in result["diagnostics"]["mode_note"]
    expected = cases.reference_eigenvalues(case, k=3)
    np.testing.assert_allclose(result["value"], expected, rtol=1e-6)
    before = {k: v.clone() for k, v in problem.module.named_buffers()}
    run_measure(HessianProblem(problem.module, problem.batches, mode="train"), "lambda_max", {})
    for k, v in problem.module.named_buffers():
        assert torch.equal(v, before[k]), f"{k} changed by a train-mode measurement"


def test_torchscript_batchnorm_in_train_mode(tmp_path: Path) -> None:
    case = cases.bn_cnn("train")
    scripted = torch.jit.script(copy.deepcopy(case.model))
    x = torch.from_numpy(case.arrays["x"])
    y = torch.from_numpy(case.arrays["y"])
    batches = [(x[i : i + cases.BATCH], y[i : i + cases.BATCH]) for i in range(0, cases.N, 5)]
    problem = HessianProblem(scripted, batches, mode="train")
    before = {k: v.clone() for k, v in scripted.named_buffers()}
    result = run_measure(problem, "top_eigenvalues", {"k": 3, "tol": 1e-9})
    np.testing.assert_allclose(result["value"], cases.reference_eigenvalues(case), rtol=1e-6)
    for k, v in scripted.named_buffers():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("name", ["lstm", "tied-lm", "bn-cnn-train", "resnet-train"])
def test_float64_models_match_the_reference_to_rounding(name: str, tmp_path: Path) -> None:
    """In float64 the engine's answer is the reference's to 1e-9: what the float32 runs of
    the service test miss is rounding, not a different objective (batch weights, layouts,
    tied weights, train-mode BatchNorm on private buffers)."""
    case = cases.ALL[name]()
    case.model.double()
    _, batches = _batches(case, tmp_path, dtype=torch.float64)
    problem = HessianProblem(case.model, batches, case.loss, case.mode, **_job(case))
    result = run_measure(problem, "top_eigenvalues", {"k": 3, "tol": 1e-10})
    np.testing.assert_allclose(result["value"], cases.reference_eigenvalues(case), rtol=1e-9)

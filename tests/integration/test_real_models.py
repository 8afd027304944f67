"""Models people train, end to end through the real service, against float64 references.

Every case of tests/models/cases.py (transformers' BERT with an attention mask, GPT-2 as a
language model with its tied embeddings and -100 labels, ViT, a ResNet-18-shaped ResNet in eval
and train mode, an LSTM classifier, a weight-tied LM with (N, V, T) logits in a dict, a
BatchNorm CNN in train mode) is exported with torch.export as the README says, uploaded with
its dataset, and measured by a real worker. Checked against the independent float64 reference:
- the top three Hessian eigenvalues, within 1e-6 relative (5e-5 where attention runs in
  float32);
- the trace of a small block of parameters inside the result's own 95% interval around the
  exact trace of that block's dense float64 Hessian;
- dim and the weight norm over the unique parameters, exactly;
- no warning about the mode the model was measured in.
The jobs are submitted first, so the worker measures while this process computes references.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.integration.conftest import Stack
from tests.models import cases

pytestmark = pytest.mark.integration


class Logits(torch.nn.Module):
    """A Hugging Face model returning its logits alone, as users often export them (BERT is
    exported as it is, returning its ModelOutput)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        extra = {} if attention_mask is None else {"attention_mask": attention_mask}
        return self.model(input_ids, **extra).logits  # images, for a vision model


def _export(case: cases.Case, path: Path) -> Path:
    model = copy.deepcopy(case.model).eval()
    if hasattr(model, "config") and case.name != "bert":  # BERT keeps its ModelOutput
        model = Logits(model)
    example = {k: torch.from_numpy(v[: case.batch_size]) for k, v in case.arrays.items()}
    example = {k: v.float() if v.is_floating_point() else v for k, v in example.items()}
    batch = torch.export.Dim("batch")
    names = [k for k in case.arrays if k != case.targets_key]
    if case.inputs_key is None and set(names) >= {"input_ids", "attention_mask"}:
        kwargs = {k: example[k] for k in ("input_ids", "attention_mask")}
        shapes = {k: {0: batch} for k in kwargs}
        ep = torch.export.export(model, (), kwargs, dynamic_shapes=shapes)
    else:
        key = case.inputs_key if isinstance(case.inputs_key, str) else names[0]
        ep = torch.export.export(model, (example[key],), dynamic_shapes=({0: batch},))
    torch.export.save(ep, path)
    return path


@pytest.fixture(scope="module")
def submitted(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    folder = tmp_path_factory.mktemp("real-models")
    jobs = {}
    for name, make in cases.ALL.items():
        case = make()
        model_id = stack.upload_id("models", _export(case, folder / f"{name}.pt2"))
        np.savez(folder / f"{name}.npz", **case.arrays)
        names = {}  # given at upload (stored with the dataset) unless recognised
        if case.inputs_key is not None:
            key = case.inputs_key
            names = {
                "inputs_key": key if isinstance(key, str) else json.dumps(key),
                "targets_key": case.targets_key,
            }
        dataset_id = stack.upload_id("datasets", folder / f"{name}.npz", **names)
        ref = {"id": dataset_id, "batch_size": case.batch_size}
        spec = {
            "model": model_id,
            "dataset": ref,
            "loss": case.loss,
            "mode": case.mode,
            **case.job,
            "measures": [
                {"name": "top_eigenvalues", "params": {"k": 3, "tol": 1e-6}},
                {"name": "trace", "params": {"parameters": [case.trace_params], "seed": 1}},
                {"name": "weight_norms"},
            ],
        }
        jobs[name] = (case, stack.submit(spec))
    return jobs


@pytest.mark.parametrize("name", list(cases.ALL))
def test_real_model_matches_float64_reference(
    stack: Stack, submitted: dict[str, tuple], name: str
) -> None:
    case, job_id = submitted[name]
    expected = cases.reference_eigenvalues(case, k=3)
    block = cases.reference_block_hessian(case)
    job = stack.wait(job_id, timeout_s=600)
    assert job["status"] == "succeeded", job.get("error")
    top = job["results"]["top_eigenvalues"]
    np.testing.assert_allclose(
        top["value"], expected, rtol=case.rtol, atol=case.rtol * abs(expected[0])
    )
    unique = cases.unique_parameters(case.model)
    assert top["diagnostics"]["dim"] == sum(p.numel() for _, p in unique)
    assert top["diagnostics"]["mode"] == case.mode
    trace = job["results"]["trace"]
    assert trace["diagnostics"]["dim"] == block.shape[0]
    low, high = trace["diagnostics"]["ci95"]
    exact = float(np.trace(block))
    slack = 1e-6 * abs(exact)  # float32 HVPs against the float64 Hessian
    assert low - slack <= exact <= high + slack, (exact, low, high)
    norms = job["results"]["weight_norms"]
    assert norms["value"] == pytest.approx(cases.weight_norm(case.model), rel=1e-6)
    for result in job["results"].values():
        assert not [w for w in result["warnings"] if "export" in w or "mode=" in w]
    assert job["evaluation"]["mode"] == case.mode

"""What `client.measure` accepts for its model and data, and what to do with each.

A model is an uploaded id or info, a path / bytes / file to upload, or a live nn.Module to
export first; data is an id, info, URI or DatasetRef, a path / bytes / file to upload, or an
`(inputs, targets)` pair of arrays or tensors. Deciding here, once, keeps the sync and async
clients to the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sharpness_client._convert import arrays_to_npz, export_module, is_module
from sharpness_client._spec import is_uri
from sharpness_client.types import DatasetInfo, DatasetRef, ModelInfo

_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Plan:
    """Either a reference the server already has (`ref`) or bytes/file to upload first, as a
    model (`model`) or a dataset."""

    ref: Any = None
    upload: Any = None
    filename: str | None = None
    model: bool = False
    arrays: bool = False  # an (inputs, targets) pair, packed as 'inputs' and 'targets'


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_ID.match(value)) and not Path(value).exists()


def _pair(data: Any) -> tuple[Any, Any] | None:
    if isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "__len__"):
        return data[0], data[1]
    return None


def model_plan(model: Any, data: Any, example_inputs: Any = None) -> Plan:
    if isinstance(model, ModelInfo) or _is_id(model):
        return Plan(ref=model, model=True)
    if is_module(model):
        if example_inputs is None:
            pair = _pair(data)
            if pair is None:
                raise ValueError("give example_inputs= to export a module when data is a file")
            example_inputs = pair[0][:2]
        return Plan(upload=export_module(model, example_inputs), filename="model.pt2", model=True)
    return Plan(upload=model, model=True)


def data_plan(data: Any) -> Plan:
    if isinstance(data, (DatasetInfo, DatasetRef, Mapping)) or _is_id(data):
        return Plan(ref=data)
    if isinstance(data, str) and is_uri(data):
        return Plan(ref=data)
    pair = _pair(data)
    if pair is not None:
        return Plan(upload=arrays_to_npz(*pair), filename="dataset.npz", arrays=True)
    return Plan(upload=data)


def measure_plans(
    model: Any, data: Any, eval_data: Any, initial_model: Any, example_inputs: Any
) -> dict[str, Plan]:
    """The job fields `client.measure` fills in (model, dataset, and eval_dataset and
    initial_model when given), each with its plan."""
    plans = {"model": model_plan(model, data, example_inputs), "dataset": data_plan(data)}
    if eval_data is not None:
        plans["eval_dataset"] = data_plan(eval_data)
    if initial_model is not None:
        plans["initial_model"] = model_plan(initial_model, data, example_inputs)
    return plans


def names_for(plan: Plan, inputs_key: Any, targets_key: str | None) -> dict[str, Any]:
    """The array names `client.measure` gives a dataset's upload and its job reference:
    none for an (inputs, targets) pair, whose arrays the SDK names itself."""
    if plan.arrays:
        return {}
    return {
        k: v for k, v in (("inputs_key", inputs_key), ("targets_key", targets_key)) if v is not None
    }

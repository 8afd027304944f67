"""Read a dataset file into batches the model accepts, never running code that came with it.

.npz (numpy.load with allow_pickle=False) or .safetensors. Which arrays are the inputs and
which the targets follows tasks.datanames: the job's names, else those stored at upload, else
common names. Inputs keep their kind: integer arrays (token ids, indices) stay int64, booleans
stay bool, floating arrays take the model's dtype. Several input arrays become positional or
keyword inputs, as the names say. Targets: integer class labels (int64; -100 marks a position
that is not counted), class probabilities (floating, same shape as the outputs), or real values
for `mse`.

`probe` runs the model on two examples and the loss on their outputs before any measure, so a
shape, layout or label problem is a 422 naming the fix instead of a failure deep in a measure.
"""

from __future__ import annotations

from tasks import safe_torch

safe_torch.ensure_weights_only()

import os  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tasks import datanames  # noqa: E402
from tasks.datanames import InputsKey  # noqa: E402
from tasks.engine.losses import IGNORE_INDEX, LayoutError, Objective, label_range_problem  # noqa: E402
from tasks.engine.problem import Batch, Inputs, call_module, select_output  # noqa: E402
from tasks.loaders import LoadedModel, LoadError, first_line  # noqa: E402

STATIC_BATCH_FIX = (
    "the model was exported with a fixed batch size; export it with a dynamic batch: "
    "torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))"
)


def dataset_format(path: Path, meta: dict[str, Any] | None) -> str:
    fmt = (meta or {}).get("format")
    if fmt:
        return str(fmt)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".safetensors"):
        return suffix[1:]
    raise LoadError("Unsupported dataset format", f"{path.name}: expected .npz or .safetensors")


class _Arrays:
    """The arrays of one file, read by name on demand."""

    def __init__(self, path: Path, fmt: str, name: str) -> None:
        self.name = name
        try:
            if fmt == "npz":
                with np.load(path, allow_pickle=False) as npz:
                    self.arrays = {k: npz[k] for k in npz.files}
            elif fmt == "safetensors":
                from safetensors.numpy import load_file

                self.arrays = dict(load_file(str(path)))
            else:
                raise LoadError(
                    "Unsupported dataset format", f"{name}: format {fmt!r}; use npz or safetensors"
                )
        except LoadError:
            raise
        except Exception as e:  # object arrays (pickle), corrupt zip, bad header
            raise LoadError(
                "Unreadable dataset", f"{name}: cannot read as {fmt} ({type(e).__name__}: {e})"
            ) from e


def _as_input(a: np.ndarray, dtype: torch.dtype, name: str, key: str) -> torch.Tensor:
    if a.dtype.kind not in "biuf":
        raise LoadError("Bad inputs", f"{name}: {key!r} has dtype {a.dtype}; need numbers")
    t = torch.from_numpy(np.ascontiguousarray(a))
    if a.dtype.kind == "f":
        t = t.to(dtype)
        if not bool(torch.isfinite(t).all()):
            raise LoadError("Bad inputs", f"{name}: {key!r} holds NaN or Inf values")
        return t
    if a.dtype.kind == "b":
        return t
    return t.to(torch.int64)  # token ids and indices: embedding layers need int64


def _as_targets(targets: np.ndarray, loss: str, dtype: torch.dtype, name: str, key: str):
    if targets.dtype.kind not in "biuf":
        raise LoadError("Bad targets", f"{name}: {key!r} has dtype {targets.dtype}; need numbers")
    t = torch.from_numpy(np.ascontiguousarray(targets))
    if loss == "mse":
        return t.to(dtype)
    if t.is_floating_point() and t.ndim >= 2:  # class probabilities
        return t.to(dtype)
    if t.is_floating_point() and not bool((t == t.round()).all()):
        raise LoadError(
            "Bad targets",
            f"{name}: {key!r} holds real values, not class labels; for regression set the job's "
            "loss to 'mse' (cross_entropy needs integer labels, or class probabilities of "
            "shape (n, classes))",
        )
    t = t.to(torch.int64)
    negative = t[(t < 0) & (t != IGNORE_INDEX)]
    if negative.numel():
        raise LoadError(
            "Bad targets",
            f"{name}: {key!r} holds the negative label {int(negative[0])}; labels are 0..C-1, "
            f"and {IGNORE_INDEX} marks a position that is not counted",
        )
    return t


def _structure(inputs_key: InputsKey, tensors: dict[str, torch.Tensor]) -> Inputs:
    if isinstance(inputs_key, str):
        return tensors[inputs_key]
    if isinstance(inputs_key, dict):
        return {kw: tensors[a] for kw, a in inputs_key.items()}
    return tuple(tensors[a] for a in inputs_key)


def load_dataset(
    path: str | os.PathLike,
    meta: dict[str, Any] | None,
    inputs_key: InputsKey | None = None,
    targets_key: str | None = None,
    max_samples: int | None = None,
    batch_size: int = 256,
    loss: str = "cross_entropy",
    dtype: torch.dtype = torch.float32,
) -> list[Batch]:
    """Read inputs and targets, truncate to max_samples, convert, and cut into batches."""
    p = Path(path)
    name = (meta or {}).get("filename") or p.name
    data = _Arrays(p, dataset_format(p, meta), name)
    try:
        inputs_key, targets_key = datanames.resolve(data.arrays, inputs_key, targets_key, meta)
    except datanames.NamesError as e:
        raise LoadError("Array missing", f"{name}: {e.part}: {e.detail}") from e
    names = [*dict.fromkeys(datanames.input_names(inputs_key))]
    arrays = {k: data.arrays[k] for k in [*names, targets_key]}
    for k, a in arrays.items():
        if a.ndim == 0:
            raise LoadError(
                "Bad dataset", f"{name}: {k!r} is a scalar; need a leading example axis"
            )
    counts = {k: a.shape[0] for k, a in arrays.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{k!r} {n}" for k, n in counts.items())
        raise LoadError("Bad dataset", f"{name}: the arrays differ in examples: {listed}")
    if max_samples is not None:
        arrays = {k: a[:max_samples] for k, a in arrays.items()}
    if arrays[targets_key].shape[0] == 0:
        raise LoadError("Bad dataset", f"{name}: the dataset holds no examples")
    tensors = {k: _as_input(arrays[k], dtype, name, k) for k in names}
    y = _as_targets(arrays[targets_key], loss, dtype, name, targets_key)
    whole = Batch(_structure(inputs_key, tensors), y)
    return [whole.slice(i, i + batch_size) for i in range(0, whole.size, batch_size)]


def probe(
    model: LoadedModel,
    batches: list[Batch],
    name: str,
    loss: str = "cross_entropy",
    output_key: str | None = None,
    class_dim: int | None = None,
) -> torch.Tensor:
    """One forward pass on two examples and the loss on them, so a mismatch says which shapes
    disagree and how to fix it; then every label is checked against the model's classes."""
    first = batches[0].slice(0, 2)
    device = next(model.module.parameters()).device
    try:
        with torch.no_grad():
            raw = call_module(model.module, first.to(device).inputs)
    except Exception as e:
        raise LoadError(
            "Data does not fit the model", _forward_problem(model, first, name, e)
        ) from e
    try:
        out = select_output(raw, output_key)
    except ValueError as e:
        raise LoadError("Unsupported model output", f"{name}: {e}") from e
    objective = Objective(loss, class_dim)  # type: ignore[arg-type]
    try:
        with torch.no_grad():
            objective(out, first.targets.to(device))
    except LayoutError as e:
        raise LoadError("Targets do not fit the outputs", f"{name}: {e}") from e
    except Exception as e:
        raise LoadError(
            "Targets do not fit the outputs",
            f"{name}: computing the {loss} loss on the model's outputs {tuple(out.shape)} and "
            f"targets {tuple(first.targets.shape)} failed ({first_line(e)})",
        ) from e
    classes = objective.num_classes(out, first.targets.to(device))
    for b in batches:
        why = label_range_problem(objective, classes, b.targets)
        if why:
            raise LoadError("Bad targets", f"{name}: the targets {why}")
    return out


def _forward_problem(model: LoadedModel, batch: Batch, name: str, e: Exception) -> str:
    msg = first_line(e)
    shapes = {
        k: (tuple(t.shape), str(t.dtype).replace("torch.", ""))
        for k, t in (
            batch.inputs.items()
            if isinstance(batch.inputs, dict)
            else enumerate(
                [batch.inputs] if isinstance(batch.inputs, torch.Tensor) else batch.inputs
            )
        )
    }
    given = ", ".join(f"{k}: shape {s[1:]} per example, {d}" for k, (s, d) in shapes.items())
    expected = f"expects inputs of shape {model.input_shape}" if model.input_shape else ""
    hint = ""
    if "guard" in msg.lower() or "expected input at" in msg.lower() or "to be equal to" in msg:
        hint = f"; {STATIC_BATCH_FIX}"
    return (
        f"{name}: the model {expected or 'rejected the inputs'}; the data gives input "
        f"{given} ({msg}){hint}"
    )

"""Read a dataset file into batches the model accepts, never running code that came with it.

.npz (numpy.load with allow_pickle=False) or .safetensors. Which arrays are the inputs and
which the targets follows tasks.contract.datanames: the job's names, else those stored at
upload, else
common names. Inputs keep their kind: integer arrays (token ids, indices) stay int64, booleans
stay bool, floating arrays take the model's dtype. Several input arrays become positional or
keyword inputs, as the names say. Targets: integer class labels (int64; -100 marks a position
that is not counted), class probabilities (floating, same shape as the outputs), or real values
for `mse`.

`probe` runs the model on two examples and the loss on their outputs before any measure, so a
shape, layout or label problem is a 422 naming the fix instead of a failure deep in a measure.
"""

from __future__ import annotations

import inspect
import json
import os
import struct
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from tasks.artifacts import formats
from tasks.contract import datanames
from tasks.contract.datanames import InputsKey
from tasks.engine.batches import BatchSource
from tasks.engine.losses import IGNORE_INDEX, LayoutError, Objective, label_range_problem
from tasks.engine.problem import Batch, Inputs, call_module, select_output
from tasks.worker.errors import STOPS, LoadError, first_line
from tasks.worker.loaders.model import LoadedModel

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


class _Lazy:
    """One array of a file, rows read on demand: `shape`, `dtype`, `ndim`, and `rows(a, b)`."""

    def __init__(
        self, shape: tuple[int, ...], dtype: np.dtype, rows: Callable[[int, int], Any]
    ) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.rows = rows

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def _npz_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Lazy:
    """A .npy inside the zip: memory-mapped when stored uncompressed, else read through the
    decompressing stream (seeking forward) one slice of rows at a time."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}; save with numpy.savez")
        header_len = f.tell()
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    if fortran and len(shape) > 1:  # column-major: rows are not contiguous; read it whole
        with zf.open(info) as f:
            whole = np.lib.format.read_array(f, allow_pickle=False)
        return _Lazy(shape, dtype, lambda a, b: whole[a:b])
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as raw:  # the member's data follows its local header
            raw.seek(info.header_offset)
            local = raw.read(30)
            if local[:4] != b"PK\x03\x04":
                raise ValueError(f"bad local header for {info.filename}")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
        offset = info.header_offset + 30 + name_len + extra_len + header_len
        count = int(np.prod(shape, dtype=np.int64))
        if count == 0:
            empty = np.empty(shape, dtype)
            return _Lazy(shape, dtype, lambda a, b: empty[a:b])
        mm = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape))
        return _Lazy(shape, dtype, lambda a, b: mm[a:b])
    dims = tuple(int(n) for n in shape)
    row_bytes = int(np.prod(dims[1:], dtype=np.int64)) * np.dtype(dtype).itemsize

    def rows(a: int, b: int) -> np.ndarray:
        a, b = max(0, a), min(b, dims[0] if dims else 0)
        n = max(0, b - a)
        with zipfile.ZipFile(path) as z, z.open(info) as f:
            f.seek(header_len + a * row_bytes)  # decompresses up to there, keeps nothing
            buf = f.read(n * row_bytes)
        return np.frombuffer(buf, dtype=dtype).reshape((n, *dims[1:]))

    return _Lazy(dims, dtype, rows)


def _npz_arrays(path: Path) -> dict[str, _Lazy]:
    zf = zipfile.ZipFile(path)
    with zf:
        out = {}
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            out[info.filename[:-4]] = _npz_member(path, zf, info)
    return out


def _safetensors_arrays(path: Path) -> dict[str, _Lazy]:
    out = {}
    with safe_open(str(path), framework="numpy") as f:
        for k in f.keys():
            piece = f.get_slice(k)
            shape = tuple(piece.get_shape())
            dtype = piece[0:0].dtype if shape else f.get_tensor(k).dtype

            def rows(a: int, b: int, k: str = k) -> np.ndarray:
                with safe_open(str(path), framework="numpy") as g:
                    return g.get_slice(k)[a:b]

            out[k] = _Lazy(shape, dtype, rows)
    return out


class _Arrays:
    """The arrays of one file, by name, read lazily: `arrays[k]` gives shape and dtype at
    once and rows only when asked (.npz members memory-mapped when stored, safetensors by
    slices)."""

    def __init__(self, path: Path, fmt: str, name: str) -> None:
        self.name = name
        try:
            if fmt == formats.NPZ:
                self.arrays = _npz_arrays(path)
            elif fmt == formats.SAFETENSORS:
                self.arrays = _safetensors_arrays(path)
            else:
                raise LoadError(
                    "Unsupported dataset format", f"{name}: format {fmt!r}; use npz or safetensors"
                )
        except LoadError:
            raise
        except STOPS:
            raise
        except Exception as e:  # object arrays (pickle), corrupt zip, bad header
            raise LoadError(
                "Unreadable dataset", f"{name}: cannot read as {fmt} ({type(e).__name__}: {e})"
            ) from e


def _as_input(
    a: np.ndarray, dtype: torch.dtype, name: str, key: str, check: bool = True
) -> torch.Tensor:
    if a.dtype.kind not in "biuf":
        raise LoadError("Bad inputs", f"{name}: {key!r} has dtype {a.dtype}; need numbers")
    t = torch.from_numpy(np.ascontiguousarray(a))
    if a.dtype.kind == "f":
        t = t.to(dtype)
        if check and not bool(torch.isfinite(t).all()):
            raise LoadError("Bad inputs", f"{name}: {key!r} holds NaN or Inf values")
        return t
    if a.dtype.kind == "b":
        return t
    return t.to(torch.int64)  # token ids and indices: embedding layers need int64


def _as_targets(
    targets: np.ndarray, loss: str, dtype: torch.dtype, name: str, key: str
) -> torch.Tensor:
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


def _checked_size(
    arrays: dict[str, _Lazy],
    names: list[str],
    targets_key: str,
    max_samples: int | None,
    name: str,
) -> int:
    """The number of examples used, once every array has one leading example axis of the
    same length and the inputs are numbers (known from the headers, before any value is
    read)."""
    for k, array in arrays.items():
        if array.ndim == 0:
            raise LoadError(
                "Bad dataset", f"{name}: {k!r} is a scalar; need a leading example axis"
            )
    counts = {k: array.shape[0] for k, array in arrays.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{k!r} {n}" for k, n in counts.items())
        raise LoadError("Bad dataset", f"{name}: the arrays differ in examples: {listed}")
    size = counts[targets_key]
    if max_samples is not None:
        size = min(size, max(0, int(max_samples)))
    if size == 0:
        raise LoadError("Bad dataset", f"{name}: the dataset holds no examples")
    for k in names:
        if arrays[k].dtype.kind not in "biuf":
            raise LoadError(
                "Bad inputs", f"{name}: {k!r} has dtype {arrays[k].dtype}; need numbers"
            )
    return size


def load_dataset(
    path: str | os.PathLike,
    meta: dict[str, Any] | None,
    inputs_key: InputsKey | None = None,
    targets_key: str | None = None,
    max_samples: int | None = None,
    batch_size: int = 256,
    loss: str = "cross_entropy",
    dtype: torch.dtype = torch.float32,
) -> BatchSource:
    """The dataset's batches of `batch_size` examples (the first max_samples), read lazily.

    Shapes, names and targets are checked now, and the inputs' values in one streaming pass;
    the returned BatchSource materialises each batch (converted to `dtype`) when it is used,
    so a file larger than memory is measured by streaming."""
    p = Path(path)
    name = (meta or {}).get("filename") or p.name
    data = _Arrays(p, dataset_format(p, meta), name)
    try:
        inputs_key, targets_key = datanames.resolve(data.arrays, inputs_key, targets_key, meta)
    except datanames.NamesError as e:
        raise LoadError("Array missing", f"{name}: {e.part}: {e.detail}") from e
    names = [*dict.fromkeys(datanames.input_names(inputs_key))]
    arrays = {k: data.arrays[k] for k in [*names, targets_key]}
    size = _checked_size(arrays, names, targets_key, max_samples, name)
    # targets are small (a label per example or position): read, checked and kept whole
    y = _as_targets(np.array(arrays[targets_key].rows(0, size)), loss, dtype, name, targets_key)

    def read_inputs(a: int, b: int, check: bool = False) -> Inputs:
        tensors = {
            k: _as_input(np.array(arrays[k].rows(a, b)), dtype, name, k, check) for k in names
        }
        return _structure(inputs_key, tensors)

    # one streaming pass over the inputs, a bounded chunk at a time, so a NaN is refused now
    # and not in the middle of a measure
    row_bytes = sum(arrays[k].row_bytes for k in names) or 1
    chunk = max(batch_size, (16 << 20) // row_bytes)
    for a in range(0, size, chunk):
        read_inputs(a, min(a + chunk, size), check=True)
    itemsize = {k: _converted_itemsize(arrays[k].dtype, dtype) for k in names}
    nbytes = (
        size * sum(itemsize[k] * arrays[k].row_bytes // arrays[k].dtype.itemsize for k in names)
        + y.numel() * y.element_size()
    )
    # inputs made from the targets once the model is known (a seq2seq model's decoder inputs:
    # the labels shifted as the model does), installed by probe
    derived: list[Any] = []

    def read(a: int, b: int) -> Batch:
        inputs, targets = read_inputs(a, b), y[a:b]
        for derive in derived:
            inputs = derive(inputs, targets)
        return Batch(inputs, targets)

    source = BatchSource(
        size,
        batch_size,
        read=read,
        read_targets=lambda a, b: y[a:b],
        nbytes=nbytes,
    )
    source.derive_inputs = derived.append  # type: ignore[attr-defined]
    # what probe needs to say when names the service chose leave out an array the model's
    # forward takes (names a user gave, with the job or at upload, are taken as meant)
    source.names = (inputs_key, targets_key)  # type: ignore[attr-defined]
    source.names_chosen = _recognised(data.arrays, inputs_key, targets_key)  # type: ignore[attr-defined]
    source.unused = datanames.unused_arrays(data.arrays, inputs_key, targets_key)  # type: ignore[attr-defined]
    return source


def _recognised(arrays: Any, inputs_key: InputsKey, targets_key: str) -> bool:
    """Whether these names are the ones the service recognises in the file by itself."""
    try:
        return datanames.resolve(arrays, None, None) == (inputs_key, targets_key)
    except datanames.NamesError:
        return False


def _converted_itemsize(kind_of: np.dtype, dtype: torch.dtype) -> int:
    if kind_of.kind == "f":
        return torch.empty((), dtype=dtype).element_size()
    return 1 if kind_of.kind == "b" else 8


def probe(
    model: LoadedModel,
    batches: Sequence[Batch],
    name: str,
    loss: str = "cross_entropy",
    output_key: str | None = None,
    class_dim: int | None = None,
) -> torch.Tensor:
    """One forward pass on two examples and the loss on them, so a mismatch says which shapes
    disagree and how to fix it; then every label is checked against the model's classes."""
    left_out = _left_out_inputs(model, batches)
    if left_out:
        raise LoadError("Array left out", f"{name}: {left_out}")
    fit_inputs_to_model(model, batches, name)
    first = batches[0].slice(0, 2)
    device = next(model.module.parameters()).device
    buffers = {k: b.clone() for k, b in model.module.named_buffers()}
    try:
        with torch.no_grad():
            raw = call_module(model.module, first.to(device).inputs)
    except STOPS:
        raise
    except Exception as e:
        raise LoadError(
            "Data does not fit the model", _forward_problem(model, first, name, e)
        ) from e
    finally:  # a graph exported in train mode updates BatchNorm's running statistics
        with torch.no_grad():
            for k, b in model.module.named_buffers():
                b.copy_(buffers[k])
    try:
        out = select_output(raw, output_key)
    except ValueError as e:
        raise LoadError("Unsupported model output", f"{name}: {e}") from e
    objective = Objective(loss, class_dim)  # type: ignore[arg-type]
    try:
        # the layout and the classes first, then every label of the dataset, then the loss:
        # a label out of range anywhere (the first two included) is named, never left to
        # the loss's own "Target 10 is out of bounds"
        classes = objective.num_classes(out, first.targets.to(device))
    except LayoutError as e:
        raise LoadError("Targets do not fit the outputs", f"{name}: {e}") from e
    targets = (
        batches.iter_targets() if isinstance(batches, BatchSource) else (b.targets for b in batches)
    )
    for t in targets:
        why = label_range_problem(objective, classes, t)
        if why:
            raise LoadError("Bad targets", f"{name}: the targets {why}")
    try:
        with torch.no_grad():
            objective(out, first.targets.to(device))
    except LayoutError as e:
        raise LoadError("Targets do not fit the outputs", f"{name}: {e}") from e
    except STOPS:
        raise
    except Exception as e:
        raise LoadError(
            "Targets do not fit the outputs",
            f"{name}: computing the {loss} loss on the model's outputs {tuple(out.shape)} and "
            f"targets {tuple(first.targets.shape)} failed ({first_line(e)})",
        ) from e
    return out


#: forward parameters that are never data (the loss's labels, output switches)
_NOT_DATA = {"labels", "return_dict", "use_cache", "return_loss", "kwargs", "args"}


def forward_keywords(module: torch.nn.Module) -> list[str]:
    """The named parameters of the module's forward that may take an array (none for a
    torch.export or TorchScript program, whose forward is generic)."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in _NOT_DATA
        and not p.name.startswith("output_")
    ]


def _fitting_unused(model: LoadedModel, batches: Sequence[Batch]) -> list[str]:
    """Arrays of the file the names leave out that the model's forward takes by name."""
    unused = getattr(batches, "unused", None)
    if not unused or getattr(batches, "names", None) is None or model.format != formats.HUGGINGFACE:
        return []
    keywords = forward_keywords(model.module)
    return [a for a in unused if a in keywords]


def unused_inputs_note(model: LoadedModel, batches: Sequence[Batch]) -> str | None:
    """What a job says when names a user gave leave out an array the model's forward takes:
    they are taken as meant (the array is not used), but never silently; None otherwise."""
    if getattr(batches, "names_chosen", True):
        return None  # names the service chose are refused instead (_left_out_inputs)
    fitting = _fitting_unused(model, batches)
    if not fitting:
        return None
    inputs_key, _ = batches.names  # type: ignore[attr-defined]
    listed = ", ".join(repr(a) for a in fitting)
    return (
        f"the file holds {listed}, which {type(model.module).__name__}.forward takes, but "
        f"inputs_key={json.dumps(inputs_key)} leaves {'it' if len(fitting) == 1 else 'them'} "
        "out, so the model was measured without; name every input in inputs_key (a JSON "
        "object of keyword to array) to use them"
    )


def _left_out_inputs(model: LoadedModel, batches: Sequence[Batch]) -> str | None:
    """Why the names the service chose leave out an array of the file that the model's
    forward takes by name (a seq2seq dataset's decoder_input_ids, say), with the fix; None
    when none is. Names a user gave are taken as meant (see unused_inputs_note)."""
    if not getattr(batches, "names_chosen", False):
        return None
    fitting = _fitting_unused(model, batches)
    if not fitting:
        return None
    keywords = forward_keywords(model.module)
    inputs_key, targets_key = batches.names  # type: ignore[attr-defined]
    if isinstance(inputs_key, dict):
        mapping = dict(inputs_key)
    elif isinstance(inputs_key, str) and inputs_key in keywords:
        mapping = {inputs_key: inputs_key}
    else:
        first = keywords[0] if keywords else "input_ids"
        used = datanames.input_names(inputs_key)
        mapping = {first: used[0]} if len(used) == 1 else {k: k for k in used}
    mapping.update({a: a for a in fitting})
    text = json.dumps(mapping)
    return (
        f"the file holds {', '.join(repr(a) for a in fitting)}, which "
        f"{type(model.module).__name__}.forward takes, but the dataset's names leave "
        f"{'it' if len(fitting) == 1 else 'them'} out (inputs_key={json.dumps(inputs_key)}, "
        f"targets_key={json.dumps(targets_key)}); pass {'it' if len(fitting) == 1 else 'them'}"
        f" by keyword: curl -F 'inputs_key={text}' (upload) or \"inputs_key\": {text} (job); "
        f"CLI --inputs-key '{text}'; SDK inputs_key={mapping!r}. Or remove the array from "
        "the file if the model must not see it"
    )


def fit_inputs_to_model(model: LoadedModel, batches: Sequence[Batch], name: str) -> None:
    """Inputs the model needs that the dataset makes from its targets: an encoder-decoder
    model given no decoder inputs gets the labels shifted as the model does. probe calls it;
    a process that builds batches without probe (a data-parallel rank) calls it too."""
    no_decoder = _missing_decoder_inputs(model, batches[0])
    if no_decoder:
        derive = _decoder_inputs_from_labels(model, batches[0])
        if derive is None or not hasattr(batches, "derive_inputs"):
            raise LoadError("Decoder inputs missing", f"{name}: {no_decoder}")
        batches.derive_inputs(derive)


def _decoder_inputs_from_labels(model: LoadedModel, batch: Batch) -> Any:
    """For an encoder-decoder model given input_ids and integer labels (N, T) but no decoder
    inputs: a function adding `decoder_input_ids`, the labels shifted right exactly as the
    model does when it is given labels (`prepare_decoder_input_ids_from_labels`: the decoder
    start token first, -100 replaced by the pad token). None when that cannot be done."""
    module = model.module
    prepare = getattr(module, "prepare_decoder_input_ids_from_labels", None)
    targets, inputs = batch.targets, batch.inputs
    if prepare is None or targets.is_floating_point() or targets.ndim != 2:
        return None
    if isinstance(inputs, tuple):
        if len(inputs) != 1:
            return None
    elif not isinstance(inputs, (dict, torch.Tensor)):
        return None

    def derive(inputs: Inputs, targets: torch.Tensor) -> Inputs:
        if isinstance(inputs, torch.Tensor):
            inputs = {"input_ids": inputs}
        elif isinstance(inputs, tuple):
            inputs = {"input_ids": inputs[0]}
        with torch.no_grad():
            decoder = prepare(labels=targets.to(torch.int64))
        return {**inputs, "decoder_input_ids": decoder.to(torch.int64)}

    return derive


def _missing_decoder_inputs(model: LoadedModel, batch: Batch) -> str | None:
    """An encoder-decoder model given no decoder inputs: transformers would make them from
    the labels, which the model never sees here (BART would even decode its own input_ids)."""
    config = getattr(model.module, "config", None)
    if model.format != formats.HUGGINGFACE or not getattr(config, "is_encoder_decoder", False):
        return None
    inputs = batch.inputs
    if isinstance(inputs, dict) and (
        "decoder_input_ids" in inputs or "decoder_inputs_embeds" in inputs
    ):
        return None
    return (
        f"{type(model.module).__name__} is an encoder-decoder model and needs "
        "decoder_input_ids (made from the labels only for integer labels of shape (N, T) "
        "beside input_ids): the labels shifted right as the model does, "
        "model.prepare_decoder_input_ids_from_labels(labels=labels) (-100 in the labels marks "
        "padding that is not counted). Save them in the file as 'decoder_input_ids' (with "
        "'decoder_attention_mask' if any) beside input_ids, attention_mask and labels; those "
        "names are recognised with no keys"
    )


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

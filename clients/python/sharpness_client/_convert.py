"""Turning live objects into uploadable bytes: an nn.Module into a torch.export archive,
arrays or tensors into an .npz. torch and numpy are imported here, lazily, so the SDK itself
needs neither.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any


def _need(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"this needs {module}: pip install 'sharpness-client[{extra}]'") from e


def export_module(module: Any, example_inputs: Any, *, dynamic_seq: bool = True) -> bytes:
    """A torch.export archive (.pt2 bytes) of `module` in eval mode, batch dimension dynamic.

    The service never unpickles an upload, so a module travels as a torch.export program; its
    train/eval mode is fixed at export, and the service measures in eval mode by default.

    `example_inputs` is one tensor or array, a tuple/list of them (positional arguments), or a
    dict of keyword arguments (`{"input_ids": ids, "attention_mask": mask}`). Integer inputs
    (token ids, masks, indices) are exported as int64, as the service feeds them; floating
    inputs take the module's dtype. Dimension 0 of every input is the batch and must hold at
    least two examples (torch.export fixes a dimension of size 1). With `dynamic_seq`,
    dimension 1 of integer inputs of two or more dimensions (the sequence) is made dynamic
    where the model allows it and left at the example's length where it does not.

    Outputs are exported as the module returns them (a tensor, a tuple, a dict), a Hugging Face
    ModelOutput as a plain dict of its fields, so the archive loads without transformers (the
    service takes its `logits`). A transformers model is exported without its key/value cache.
    Scaled-dot-product attention is stored as its plain math form, whose second derivatives
    autograd computes (the fused CPU kernel has no double backward).
    """
    torch = _need("torch", "torch")
    if isinstance(example_inputs, Mapping):
        args: tuple[Any, ...] = ()
        kwargs = {str(k): _as_tensor(torch, module, v) for k, v in example_inputs.items()}
    else:
        raw = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        args, kwargs = tuple(_as_tensor(torch, module, a) for a in raw), {}
    named = [*(f"input {i}" for i in range(len(args))), *(f"input {k!r}" for k in kwargs)]
    values = [*args, *kwargs.values()]
    tensors = [(n, v) for n, v in zip(named, values, strict=True) if isinstance(v, torch.Tensor)]
    if not tensors:
        raise ValueError("example_inputs hold no tensor or array")
    for name, t in tensors:
        if t.ndim == 0 or t.shape[0] < 2:
            raise ValueError(
                f"example_inputs: {name} has shape {tuple(t.shape)}; dimension 0 is the batch "
                "and needs at least 2 examples (a size-1 batch is fixed at export)"
            )
    batch = torch.export.Dim("batch")

    def spec(value: Any, seq: bool) -> Any:
        if not isinstance(value, torch.Tensor):
            return None
        dims: dict[int, Any] = {0: batch}
        if seq and not value.is_floating_point() and value.ndim >= 2 and value.shape[1] >= 2:
            dims[1] = torch.export.Dim.AUTO  # dynamic where the model allows, else fixed
        return dims

    def shapes(seq: bool) -> Any:
        if kwargs:
            return {k: spec(v, seq) for k, v in kwargs.items()}
        return tuple(spec(a, seq) for a in args)

    with _eval_without_cache(module):
        try:
            program = _export(torch, module, args, kwargs, shapes(dynamic_seq))
        except Exception as first:
            if not dynamic_seq:
                raise _export_failed(first) from first
            try:
                program = _export(torch, module, args, kwargs, shapes(False))
            except Exception:
                raise _export_failed(first) from first
    program = _math_attention(torch, program)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def _export(torch: Any, module: Any, args: tuple, kwargs: dict, dynamic: Any) -> Any:
    return torch.export.export(module, args, kwargs or None, dynamic_shapes=dynamic)


#: words in torch.export's messages when a dimension marked dynamic was specialised
_BATCH_WORDS = ("constraint", "specializ", "specialis", "dim(", "batch", "guard", "dynamic")


def _export_failed(e: Exception) -> ValueError:
    """A ValueError naming what torch.export reported; the fixed-batch advice only where the
    failure is about a dynamic dimension."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    cause = f"{type(e).__name__}: {first[:400]}"
    if "cache" in text.lower() and "output" in text.lower():
        return ValueError(
            f"torch.export could not export the model: it returns a key/value cache ({cause}). "
            "Build it with use_cache=False (in its config and every sub-config, e.g. the "
            "decoder's) or pass use_cache=False to its forward; the batch size is not the cause"
        )
    if any(w in text.lower() for w in _BATCH_WORDS):
        return ValueError(
            f"torch.export could not export the model with a dynamic batch ({cause}). A model "
            "that fixes its batch size (x.view(32, -1), a literal batch in a reshape) must use "
            "x.shape[0] or -1 instead; torch.export.draft_export(model, args) lists every "
            "problem"
        )
    return ValueError(
        f"torch.export could not export the model ({cause}); the batch size is not the "
        "cause. torch.export.draft_export(model, args, kwargs) lists every problem"
    )


def _configs(module: Any) -> list[Any]:
    """Every transformers config the module and its submodules hold, with the configs inside
    them (a T5 or BART decoder keeps its own copy; composite models hold text_config, ...)."""
    found: dict[int, Any] = {}

    def add(cfg: Any) -> None:
        if id(cfg) in found or not hasattr(cfg, "to_dict"):
            return
        found[id(cfg)] = cfg
        for value in list(vars(cfg).values()):
            if hasattr(value, "to_dict") and hasattr(value, "model_type"):
                add(value)

    modules = module.modules() if hasattr(module, "modules") else [module]
    for m in modules:
        cfg = getattr(m, "config", None)
        if cfg is not None:
            add(cfg)
    return list(found.values())


def _takes(fn: Any, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class _eval_without_cache:
    """During the export only: eval mode, no key/value cache for a transformers model
    (use_cache=False in every config and sub-config, and passed to a forward that takes it),
    and mapping outputs (a ModelOutput) returned as a plain dict. A ModelOutput would be
    stored under its class name, which only loads where transformers has been imported; a
    dict loads anywhere, and the service takes its "logits" all the same. Parameter names stay
    the module's own (the forward is wrapped in place, not the module)."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def __enter__(self) -> None:
        import functools

        self.was_training = self.module.training
        self.caches = [(c, c.use_cache) for c in _configs(self.module) if hasattr(c, "use_cache")]
        self.module.eval()
        for cfg, _ in self.caches:
            cfg.use_cache = False
        self.own_forward = self.module.__dict__.get("forward")
        original = self.module.forward
        no_cache = _takes(original, "use_cache")

        @functools.wraps(original)  # export reads the signature through __wrapped__
        def forward(*args: Any, **kwargs: Any) -> Any:
            if no_cache:
                kwargs.setdefault("use_cache", False)
            out = original(*args, **kwargs)
            if isinstance(out, Mapping) and type(out) is not dict:
                return {k: v for k, v in out.items() if v is not None}
            return out

        self.module.forward = forward

    def __exit__(self, *exc: Any) -> None:
        if self.own_forward is None:
            del self.module.forward
        else:
            self.module.forward = self.own_forward
        self.module.train(self.was_training)
        for cfg, value in self.caches:
            cfg.use_cache = value


def _math_attention(torch: Any, program: Any) -> Any:
    """Replace scaled_dot_product_attention by its math form (same function, matmuls and a
    softmax), so the service can take Hessian-vector products through it on any device."""
    sdpa = torch.ops.aten.scaled_dot_product_attention.default
    if not any(n.op == "call_function" and n.target is sdpa for n in program.graph.nodes):
        return program
    math = torch.ops.aten._scaled_dot_product_attention_math.default

    def as_math(q: Any, k: Any, v: Any, attn_mask: Any = None, *args: Any, **kwargs: Any) -> Any:
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            # as scaled_dot_product_attention itself does before it calls the math kernel
            attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(
                attn_mask.logical_not(), float("-inf")
            )
        return math(q, k, v, attn_mask, *args, **kwargs)[0]

    return program.run_decompositions({sdpa: as_math})


def _as_tensor(torch: Any, module: Any, value: Any) -> Any:
    """numpy arrays become tensors; integer inputs become int64 (the service feeds token ids
    and indices as int64); floating inputs take the module's floating dtype (data saved as
    float64 for a float32 model is common, and export would trace a dtype error)."""
    if not isinstance(value, torch.Tensor) and hasattr(value, "__array__"):
        value = torch.as_tensor(value)
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
        if dtype is not None:
            value = value.to(dtype)
    elif isinstance(value, torch.Tensor) and value.dtype != torch.bool:
        value = value.to(torch.int64)
    return value


def _as_numpy(value: Any, np: Any) -> Any:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch for the check
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value))


def arrays_to_npz(inputs: Any, targets: Any, keys: Sequence[str] = ("inputs", "targets")) -> bytes:
    """An .npz (numeric arrays, no pickles) holding `inputs` and `targets`."""
    np = _need("numpy", "numpy")
    x, y = _as_numpy(inputs, np), _as_numpy(targets, np)
    for name, arr in (("inputs", x), ("targets", y)):
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be numeric, not {arr.dtype}")
    if len(x) != len(y):
        raise ValueError(f"inputs hold {len(x)} examples but targets {len(y)}")
    buf = io.BytesIO()
    np.savez(buf, **{keys[0]: x, keys[1]: y})
    return buf.getvalue()


def is_module(value: Any) -> bool:
    """True for a torch nn.Module, checked without importing torch."""
    return any(
        c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(value).__mro__
    )


# Files of a save_pretrained folder that the service reads; everything else stays home.
_HF_CONFIG, _HF_WEIGHTS, _HF_INDEX = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
)


def zip_pretrained_folder(folder: Any, out: Any) -> None:
    """Write a zip of a Hugging Face save_pretrained folder to the binary file `out`: its
    config.json and its safetensors (one file, or the index and its shards), nothing else."""
    import json
    import zipfile
    from pathlib import Path

    folder = Path(folder)
    if not (folder / _HF_CONFIG).is_file():
        raise FileNotFoundError(
            f"{folder}: no config.json; a model folder is what model.save_pretrained(folder) writes"
        )
    if (folder / _HF_INDEX).is_file():
        index = json.loads((folder / _HF_INDEX).read_text())
        weights = [_HF_INDEX, *sorted(set(index.get("weight_map", {}).values()))]
    elif (folder / _HF_WEIGHTS).is_file():
        weights = [_HF_WEIGHTS]
    else:
        pickles = sorted(p.name for p in folder.glob("*.bin"))
        raise FileNotFoundError(
            f"{folder}: no model.safetensors"
            + (
                f" (only {', '.join(pickles)}, which the service never unpickles)"
                if pickles
                else ""
            )
            + "; save the model with model.save_pretrained(folder), which writes safetensors"
        )
    import shutil

    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:  # safetensors barely compress
        for name in [_HF_CONFIG, *weights]:
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder}: {_HF_INDEX} names {name}, which is missing")
            # a fixed timestamp: the same files give the same bytes, so the same model id
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with (folder / name).open("rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)

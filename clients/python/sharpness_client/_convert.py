"""Turning live objects into uploadable bytes: an nn.Module into a torch.export archive,
arrays or tensors into an .npz. torch and numpy are imported here, lazily, so the SDK itself
needs neither.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any


def _need(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"this needs {module}: pip install 'sharpness-client[{extra}]'") from e


def export_module(module: Any, example_inputs: Any) -> bytes:
    """A torch.export archive (.pt2 bytes) of `module` in eval mode, batch dimension dynamic.

    The service never unpickles an upload, so a module travels as a torch.export program; its
    train/eval mode is fixed at export, and the service measures in eval mode by default. The
    batch must hold at least two examples: torch.export specialises a dimension of size 1.
    """
    torch = _need("torch", "torch")
    raw = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    args = tuple(_as_tensor(torch, module, a) for a in raw)
    if any(getattr(a, "shape", (0,))[0] < 2 for a in args if hasattr(a, "shape")):
        raise ValueError("example_inputs need a batch of at least 2 (a size-1 batch is fixed)")
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} if isinstance(a, torch.Tensor) else None for a in args)
    was_training = module.training
    module.eval()
    try:
        program = torch.export.export(module, args, dynamic_shapes=dynamic)
    finally:
        module.train(was_training)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def _as_tensor(torch: Any, module: Any, value: Any) -> Any:
    """numpy arrays become tensors; floating inputs take the module's floating dtype (data
    saved as float64 for a float32 model is common, and export would trace a dtype error)."""
    if not isinstance(value, torch.Tensor) and hasattr(value, "__array__"):
        value = torch.as_tensor(value)
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
        if dtype is not None:
            value = value.to(dtype)
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

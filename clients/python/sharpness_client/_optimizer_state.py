"""Adam's state as the service takes it: a safetensors file of `step` and `exp_avg_sq.<name>`.

Built here without the safetensors package (the format is an 8-byte little-endian header
length, a JSON header of dtypes, shapes and offsets, then the raw little-endian bytes), from
numpy arrays or torch tensors (numpy needed: the `numpy` extra).

    from sharpness_client import optimizer_state_bytes, optimizer_state_from_torch
    blob = optimizer_state_from_torch(opt, model)       # torch.optim.Adam / AdamW
    blob = optimizer_state_bytes({"fc1.weight": v1, ...}, step=500)
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

MOMENT = "exp_avg_sq."


def _array(value: Any) -> Any:
    import numpy as np

    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().to("cpu").double().numpy()
    a = np.asarray(value)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))


def optimizer_state_bytes(exp_avg_sq: Mapping[str, Any], step: int) -> bytes:
    """The safetensors bytes of Adam's second moments by parameter name and its step count."""
    if not exp_avg_sq:
        raise ValueError("exp_avg_sq is empty: give Adam's exp_avg_sq for every parameter")
    if int(step) != step or step < 1:
        raise ValueError(f"step must be a whole number ≥ 1 (Adam's step count), got {step}")
    import numpy as np

    tensors = {"step": np.array([float(step)], dtype="<f8")}
    tensors.update({MOMENT + name: _array(v) for name, v in exp_avg_sq.items()})
    header: dict[str, Any] = {}
    chunks, offset = [], 0
    for name, a in tensors.items():
        data = a.tobytes()
        dtype = "F64" if a.dtype == np.float64 else "F32"
        header[name] = {
            "dtype": dtype,
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format aligns the data to 8 bytes
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


def optimizer_state_from_torch(optimizer: Any, model: Any) -> bytes:
    """The state of a torch Adam/AdamW `optimizer` over `model`'s named parameters."""
    v, step = {}, None
    for name, p in model.named_parameters():
        state = optimizer.state.get(p)
        if not state or "exp_avg_sq" not in state:
            raise ValueError(
                f"the optimizer has no exp_avg_sq for {name!r}: pass an Adam/AdamW optimizer "
                "that has taken at least one step over this model's parameters"
            )
        v[name] = state["exp_avg_sq"]
        step = int(float(state["step"]))
    return optimizer_state_bytes(v, step)  # type: ignore[arg-type]

"""Real files of every kind the API meets, built with torch, numpy and safetensors.

The tests may import torch; only the gateway may not.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save as st_save_numpy
from safetensors.torch import save as st_save_torch


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def pt2_bytes(tmp: Path) -> bytes:
    model = mlp().eval()
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (torch.randn(2, 4),), dynamic_shapes=({0: batch},))
    path = tmp / "model.pt2"
    torch.export.save(program, path)
    return path.read_bytes()


def torchscript_bytes() -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(mlp().eval()), buf)
    return buf.getvalue()


def torch_save_module_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save(mlp(), buf)
    return buf.getvalue()


def state_dict_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save(mlp().state_dict(), buf)
    return buf.getvalue()


def safetensors_model_bytes() -> bytes:
    return st_save_torch({k: v.contiguous() for k, v in mlp().state_dict().items()})


def raw_pickle_bytes() -> bytes:
    return pickle.dumps({"weights": [1.0, 2.0]}, protocol=4)


def npz_bytes(n: int = 16, compressed: bool = False, **arrays: np.ndarray) -> bytes:
    rng = np.random.default_rng(0)
    if not arrays:
        arrays = {
            "inputs": rng.standard_normal((n, 4)).astype(np.float32),
            "targets": rng.integers(0, 3, n).astype(np.int64),
        }
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def safetensors_dataset_bytes(n: int = 16) -> bytes:
    rng = np.random.default_rng(1)
    return st_save_numpy(
        {
            "inputs": rng.standard_normal((n, 4)).astype(np.float32),
            "targets": rng.integers(0, 3, n).astype(np.int64),
        }
    )

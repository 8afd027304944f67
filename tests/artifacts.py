"""Model and data files the worker and integration tests upload: good, broken and hostile."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn


def mlp(in_features: int = 4, hidden: int = 8, out: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, out))


def export(model: nn.Module, path: Path, in_features: int, dtype=torch.float32) -> Path:
    """torch.export with a dynamic batch dimension, as users are told to."""
    model = model.to(dtype).eval()
    x = torch.zeros(4, in_features, dtype=dtype)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, str(path))
    return path


def data(n: int = 64, in_features: int = 4, classes: int = 3, seed: int = 0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, in_features)).astype(dtype)
    y = rng.integers(0, classes, n).astype(np.int64)
    return x, y


def save_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, inputs=x, targets=y)
    return path


def pickle_payload(marker: Path) -> bytes:
    """A protocol-0 pickle that calls builtins.open(marker, 'w') through REDUCE when loaded."""
    return b"cbuiltins\nopen\n(V" + str(marker).encode() + b"\nVw\ntR."


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin:
        members = {i.filename: zin.read(i.filename) for i in zin.infolist()}
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name, blob in edit(members).items():
            zout.writestr(name, blob)
    return dst


def tampered_weight(src: Path, dst: Path, marker: Path) -> Path:
    """A .pt2 whose first weight is marked as pickled and holds the payload instead."""

    def edit(m: dict[str, bytes]) -> dict[str, bytes]:
        key = next(k for k in m if k.endswith("_weights_config.json"))
        cfg = json.loads(m[key])
        entry = next(iter(cfg["config"].values()))
        entry["use_pickle"] = True
        m[key] = json.dumps(cfg).encode()
        m[key.rsplit("/", 1)[0] + "/" + entry["path_name"]] = pickle_payload(marker)
        return m

    return _rewrite(src, dst, edit)


def tampered_opaque(src: Path, dst: Path, marker: Path) -> Path:
    """A .pt2 with an 'opaque object' constant: torch.export.load would pickle.loads it."""

    def edit(m: dict[str, bytes]) -> dict[str, bytes]:
        key = next(k for k in m if k.endswith("_constants_config.json"))
        cfg = json.loads(m[key])
        cfg["config"]["evil"] = {
            "path_name": "opaque_obj_0",
            "is_param": False,
            "use_pickle": True,
            "tensor_meta": None,
        }
        m[key] = json.dumps(cfg).encode()
        m[key.rsplit("/", 1)[0] + "/opaque_obj_0"] = pickle_payload(marker)
        return m

    return _rewrite(src, dst, edit)

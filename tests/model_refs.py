"""Checkpoints registered by reference in tests: a sharded save_pretrained folder of a tiny
GPT-2 language model, and a built-in MLP's weights split into safetensors shards with an
index, written under a data root."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests import hf_checkpoints as hf

INDEX = "model.safetensors.index.json"


def sharded_gpt2(folder: Path, seed: int = 0) -> Path:
    """A tiny GPT2LMHeadModel's save_pretrained folder in several safetensors shards."""
    hf.save(hf.gpt2_lm(seed), folder, max_shard_size="40KB")
    assert (folder / INDEX).is_file() and len(list(folder.glob("*.safetensors"))) > 1
    return folder


def mlp_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    return {f"layers.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}


MLP_CONFIG = {"in_features": 4, "hidden": [8], "out_features": 3, "activation": "tanh"}


def sharded_mlp(folder: Path, name: str = INDEX) -> Path:
    """The MLP's weights in two shards and their index; returns the index's path."""
    folder.mkdir(parents=True, exist_ok=True)
    state = mlp_state()
    names = sorted(state)
    parts = {"a.safetensors": names[:2], "b.safetensors": names[2:]}
    weight_map = {}
    for shard, keys in parts.items():
        save_file({k: state[k] for k in keys}, str(folder / shard))
        weight_map.update({k: shard for k in keys})
    (folder / name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder / name

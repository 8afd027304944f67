"""Built-in architectures for models uploaded as safetensors weights.

A safetensors file holds only tensors, so the worker needs the code of the network: the upload's
metadata names an architecture from this zoo and its config. Keeping the zoo small and explicit
is the point: no user code ever runs in the worker.

    mlp  {in_features, hidden: [..], out_features, activation: relu|tanh}
         Linear layers named layers.0, layers.2, ... (activations in between); the keys of a
         bare nn.Sequential (0.weight, 2.weight, ...) are accepted too.
    cnn  {in_channels, num_classes, channels: [..], image_size}
         blocks of Conv3x3 + BatchNorm + ReLU + MaxPool2, then one Linear head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


class ZooError(ValueError):
    """The architecture name or its config is not usable."""


def _int(config: dict[str, Any], key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ZooError(f"config field {key!r} must be a positive integer, got {value!r}")
    return value


def _int_list(config: dict[str, Any], key: str, default: list[int]) -> list[int]:
    value = config.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, int) and v > 0 for v in value):
        raise ZooError(f"config field {key!r} must be a list of positive integers, got {value!r}")
    return value


def mlp(config: dict[str, Any]) -> nn.Module:
    sizes = [_int(config, "in_features"), *_int_list(config, "hidden", [])]
    sizes.append(_int(config, "out_features"))
    act = config.get("activation", "relu")
    if act not in ACTIVATIONS:
        raise ZooError(f"config field 'activation' must be one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[act]())
    return _Wrapped(nn.Sequential(*layers))


class _Wrapped(nn.Module):
    """Flattens the input; keys read layers.0.weight, layers.2.weight, ... (as in the docs)."""

    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, channels: list[int], size: int):
        super().__init__()
        blocks: list[nn.Module] = []
        c = in_channels
        for out in channels:
            blocks += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            blocks.append(nn.MaxPool2d(2))
            c, size = out, size // 2
        if size < 1:
            raise ZooError("image_size is too small for that many pooling blocks")
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(c * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def cnn(config: dict[str, Any]) -> nn.Module:
    return SmallCNN(
        _int(config, "in_channels", 1),
        _int(config, "num_classes"),
        _int_list(config, "channels", [8, 16]),
        _int(config, "image_size", 28),
    )


ARCHITECTURES: dict[str, Callable[[dict[str, Any]], nn.Module]] = {"mlp": mlp, "cnn": cnn}


def align_keys(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The zoo's mlp nests its layers under `layers.`; an MLP saved as a bare nn.Sequential,
    the usual way to write one, has keys 0.weight, 2.weight, ... Accept both spellings."""
    expected = set(module.state_dict())
    if isinstance(module, _Wrapped) and set(state) != expected:
        nested = {f"layers.{key}": value for key, value in state.items()}
        if set(nested) == expected:
            return nested
    return state


def build(name: str, config: dict[str, Any] | None) -> nn.Module:
    """Instantiate a zoo architecture (random weights; the caller loads the state dict)."""
    if name not in ARCHITECTURES:
        raise ZooError(f"unknown architecture {name!r}; the zoo has {sorted(ARCHITECTURES)}")
    if config is not None and not isinstance(config, dict):
        raise ZooError("the architecture config must be a JSON object")
    return ARCHITECTURES[name](config or {})

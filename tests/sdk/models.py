"""Small float64 models and data for the end-to-end tests (exact references stay exact)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

IN, OUT = 5, 3


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(IN, 4), nn.Tanh(), nn.Linear(4, OUT)).double().eval()


def data(n: int = 48, features: int = IN, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, features)), rng.integers(0, OUT, n)


def dense_spectrum(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int) -> torch.Tensor:
    """Eigenvalues of the exact Hessian of the mean loss, in float64."""
    from tasks.engine.problem import HessianProblem
    from tests.engine.reference import dense_hessian

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    batches = [(xt[i : i + batch], yt[i : i + batch]) for i in range(0, len(xt), batch)]
    problem = HessianProblem(model, batches, loss="cross_entropy")
    return torch.linalg.eigvalsh(dense_hessian(problem))

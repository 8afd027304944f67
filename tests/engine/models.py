"""Small float64 models with exact Hessians that fit in memory (dims of tens to hundreds)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tasks.engine.problem import HessianProblem


class MLP(nn.Module):
    def __init__(self, d_in: int = 4, hidden: int = 6, d_out: int = 3, act: str = "tanh"):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, d_out)
        self.act = nn.Tanh() if act == "tanh" else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2 * 4 * 4, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.tanh(self.bn(self.conv(x))).flatten(1))


class Tied(nn.Module):
    """One linear layer applied twice, also reachable under a second name (tied weights)."""

    def __init__(self, d: int = 4, classes: int = 3):
        super().__init__()
        self.shared = nn.Linear(d, d)
        self.alias = self.shared
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.alias(torch.tanh(self.shared(x)))))


class Residual(nn.Module):
    def __init__(self, d: int = 4, classes: int = 3):
        super().__init__()
        self.a = nn.Linear(d, d)
        self.b = nn.Linear(d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x + self.b(torch.tanh(self.a(x))))


class TinyTransformer(nn.Module):
    def __init__(self, d: int = 4, classes: int = 2):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor) -> Tensor:
        a, _ = self.attn(x, x, x, need_weights=False)
        return self.head(self.norm(x + a).mean(dim=1))


def data(n: int, shape: tuple[int, ...], classes: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def make(name: str, seed: int = 0) -> tuple[nn.Module, list[tuple[Tensor, Tensor]], str]:
    """A float64 model, its batches and its loss name."""
    torch.manual_seed(seed)
    if name in ("mlp_tanh", "mlp_relu"):
        return MLP(act=name[4:]).double(), [data(64, (4,), 3, seed)], "cross_entropy"
    if name == "cnn_bn":
        m = SmallCNN().double()
        with torch.no_grad():
            m.bn.running_mean.uniform_(-0.2, 0.2)
            m.bn.running_var.uniform_(0.5, 1.5)
        return m, [data(32, (1, 6, 6), 3, seed)], "cross_entropy"
    if name == "tied":
        return Tied().double(), [data(40, (4,), 3, seed)], "cross_entropy"
    if name == "residual":
        return Residual().double(), [data(48, (4,), 3, seed)], "cross_entropy"
    if name == "transformer":
        return TinyTransformer().double(), [data(16, (3, 4), 2, seed)], "cross_entropy"
    raise KeyError(name)


def mlp_problem(n: int = 16, seed: int = 0) -> tuple[MLP, HessianProblem]:
    """A float64 MLP (tanh, 4 → 6 → 3) seeded with `seed`, and a problem of n random inputs
    with random labels."""
    torch.manual_seed(seed)
    model = MLP().double()
    x = torch.randn(n, 4, dtype=torch.float64)
    return model, HessianProblem(model, [(x, torch.randint(0, 3, (n,)))])


def spectrum_matrix(eigs: Tensor, seed: int = 0) -> Tensor:
    """The symmetric matrix U diag(eigs) Uᵀ, U a random orthogonal matrix drawn with `seed`."""
    g = torch.Generator().manual_seed(seed)
    n = eigs.numel()
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (U * eigs.to(torch.float64)) @ U.T

"""The chunked Lanczos basis against the same columns held in one dense matrix."""

from __future__ import annotations

import torch

from tasks.engine.basis import Basis


def _orthonormal(dim: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(dim, n, generator=g, dtype=torch.float64))[0]


def test_columns_across_chunk_boundaries_equal_the_dense_matrix() -> None:
    Q = _orthonormal(50, 23)
    basis = Basis(50, chunk=4, capacity=23)
    basis.append(Q[:, 0])  # a vector
    basis.append(Q[:, 1:7])  # a block that crosses a chunk boundary
    for i in range(7, 23):
        basis.append(Q[:, i])
    assert len(basis) == 23
    g = torch.Generator().manual_seed(1)
    S = torch.randn(23, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(basis.combine(S), Q @ S, atol=1e-13)
    assert torch.allclose(basis.combine(S[:, 0]), Q @ S[:, 0], atol=1e-13)
    W = torch.randn(50, 5, generator=g, dtype=torch.float64)
    projected = basis.project_out(W)
    assert torch.allclose(projected, W - Q @ (Q.T @ W), atol=1e-12)
    assert float((Q.T @ projected).abs().max()) < 1e-13


def test_never_allocates_past_its_capacity() -> None:
    basis = Basis(1000, chunk=16, capacity=10)
    for i in range(10):
        basis.append(torch.eye(1000, dtype=torch.float64)[:, i])
    assert sum(c.numel() for c in basis._chunks) == 1000 * 10


def test_empty_basis() -> None:
    basis = Basis(7)
    w = torch.ones(7, dtype=torch.float64)
    assert torch.equal(basis.project_out(w), w)
    f64 = torch.float64
    assert torch.equal(basis.combine(torch.zeros(0, 2, dtype=f64)), torch.zeros(7, 2, dtype=f64))
    Q = _orthonormal(7, 3)
    assert torch.equal(Basis.of(Q).combine(torch.eye(3, dtype=f64)), Q)

"""Trajectory math against known answers: rotated eigenvectors, permuted bases, and the dense
float64 Hessians of SGD checkpoints of a small MLP."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.engine.lanczos import lanczos
from tasks.engine.linear_operator import MatrixOperator
from tasks.engine.problem import HessianProblem
from tasks.engine.trajectory import (
    ShapeMismatch,
    TrajectoryTracker,
    named_shapes,
    principal_cosines,
    stability_ratio,
    subspace_overlap,
    top_eigenpairs,
    top_overlap,
)
from tests.checkpoints import sgd_checkpoints
from tests.engine.models import MLP, data
from tests.engine.reference import dense_hessian

DIM = 12
EIGS = torch.tensor([9.0, 7.0, 5.0, 3.0] + [1.0 / (i + 2) for i in range(DIM - 4)]).double()


def basis(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=g, dtype=torch.float64))
    return q


def rotated(Q: torch.Tensor, i: int, j: int, theta: float) -> torch.Tensor:
    """Q with columns i and j turned by θ in their plane (a Givens rotation)."""
    R = Q.clone()
    c, s = math.cos(theta), math.sin(theta)
    R[:, i] = c * Q[:, i] + s * Q[:, j]
    R[:, j] = -s * Q[:, i] + c * Q[:, j]
    return R


def sym(Q: torch.Tensor) -> torch.Tensor:
    return Q @ torch.diag(EIGS) @ Q.T


def top_vectors(matrix: torch.Tensor, k: int) -> torch.Tensor:
    res = lanczos(MatrixOperator(matrix), k=k, tol=1e-12, max_iter=DIM, return_eigenvectors=True)
    assert res.converged and res.eigenvectors is not None
    return res.eigenvectors


@pytest.mark.parametrize("theta", [0.0, 0.3, 1.0, math.pi / 2, 2.5])
def test_rotation_in_top_plane(theta: float) -> None:
    """v₁ turned by θ towards v₂: top overlap |cos θ|, k=1 subspace cos²θ, k=2 exactly 1 (the
    top-2 subspace did not move), k=3 also 1."""
    Q = basis()
    A, B = sym(Q), sym(rotated(Q, 0, 1, theta))
    V, W = top_vectors(A, 3), top_vectors(B, 3)
    assert top_overlap(V[:, 0], W[:, 0]) == pytest.approx(abs(math.cos(theta)), abs=1e-9)
    assert subspace_overlap(V[:, :1], W[:, :1]) == pytest.approx(math.cos(theta) ** 2, abs=1e-9)
    assert subspace_overlap(V[:, :2], W[:, :2]) == pytest.approx(1.0, abs=1e-9)
    assert subspace_overlap(V, W) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("theta", [0.2, 0.9, math.pi / 3])
def test_rotation_out_of_the_subspace(theta: float) -> None:
    """v₁ turned by θ towards v₄ (outside the top 3): ‖VᵀW‖²_F/3 = (cos²θ + 2)/3, principal
    cosines (1, 1, |cos θ|)."""
    Q = basis(1)
    V, W = Q[:, :3], rotated(Q, 0, 3, theta)[:, :3]
    assert subspace_overlap(V, W) == pytest.approx((math.cos(theta) ** 2 + 2) / 3, abs=1e-12)
    assert principal_cosines(V, W) == pytest.approx([1.0, 1.0, abs(math.cos(theta))], abs=1e-12)


def test_permuted_and_sign_flipped_basis_overlaps_fully() -> None:
    Q = basis(2)[:, :5]
    P = Q[:, [3, 0, 4, 1, 2]] * torch.tensor([1.0, -1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    assert subspace_overlap(Q, P) == pytest.approx(1.0, abs=1e-12)
    assert principal_cosines(Q, P) == pytest.approx([1.0] * 5, abs=1e-12)
    assert top_overlap(Q[:, 0], -Q[:, 0]) == pytest.approx(1.0, abs=1e-15)
    assert top_overlap(Q[:, 0], Q[:, 1]) == pytest.approx(0.0, abs=1e-12)


def test_orthogonal_subspaces_overlap_zero() -> None:
    Q = basis(3)
    assert subspace_overlap(Q[:, :3], Q[:, 3:6]) == pytest.approx(0.0, abs=1e-12)


def test_stability_ratio_edge() -> None:
    assert stability_ratio(20.0, 0.1) == pytest.approx(1.0)  # λmax = 2/η exactly
    assert stability_ratio(30.0, 0.1) > 1 > stability_ratio(10.0, 0.1)


# ------------------------------------------------------------- dense Hessians of checkpoints
def checkpoint_problems(steps: list[int], lr: float = 0.5) -> list[HessianProblem]:
    torch.manual_seed(0)
    x, y = data(64, (4,), 3, seed=0)
    models = sgd_checkpoints(MLP(hidden=6).double(), x, y, lr, steps)
    return [HessianProblem(m, [(x[:40], y[:40]), (x[40:], y[40:])]) for m in models]


def dense_top(problem: HessianProblem, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    evals, evecs = torch.linalg.eigh(dense_hessian(problem))
    order = torch.argsort(evals, descending=True)[:k]
    return evals[order], evecs[:, order]


@pytest.mark.parametrize("k", [1, 3])
def test_lanczos_overlaps_match_dense_eigh(k: int) -> None:
    problems = checkpoint_problems([0, 5, 30])
    lr = 0.5
    tracker = TrajectoryTracker(k=k)
    dense = [dense_top(p, k) for p in problems]
    for i, p in enumerate(problems):
        pairs = top_eigenpairs(p, k=k, tol=1e-10, max_iter=p.dim)
        point, overlap = tracker.add(named_shapes(p.names, p.shapes), pairs, lr)
        evals, evecs = dense[i]
        exact = float(evals[0])
        assert point["lambda_max"] == pytest.approx(exact, rel=1e-9)
        assert point["stability_ratio"] == pytest.approx(exact * lr / 2, rel=1e-9)
        assert point["eigenvalues"] == pytest.approx(evals.tolist(), rel=1e-8)
        if i == 0:
            assert overlap is None
            continue
        prev = dense[i - 1][1]
        want_top = abs(float(prev[:, 0] @ evecs[:, 0]))
        want_sub = float((prev.T @ evecs).pow(2).sum()) / k
        assert abs(overlap["top_overlap"] - want_top) <= 1e-6, (overlap, want_top)
        assert abs(overlap["subspace_overlap"] - want_sub) <= 1e-6, (overlap, want_sub)
        assert 0.0 <= overlap["subspace_overlap"] <= 1.0
    assert tracker.count == 3


def test_checkpoints_of_other_shapes_are_refused() -> None:
    x, y = data(16, (4,), 3)
    a = HessianProblem(MLP(hidden=6).double(), [(x, y)])
    b = HessianProblem(MLP(hidden=7).double(), [(x, y)])
    tracker = TrajectoryTracker(k=1)
    tracker.add(named_shapes(a.names, a.shapes), top_eigenpairs(a, k=1, max_iter=a.dim), 0.1)
    with pytest.raises(ShapeMismatch, match=r"'fc1.weight' has shape \[7, 4\] but \[6, 4\]"):
        tracker.check(named_shapes(b.names, b.shapes))


# ------------------------------------------------------------------ optimizer-aware edges
def test_momentum_point_is_against_the_heavy_ball_edge() -> None:
    p = checkpoint_problems([5])[0]
    exact = float(dense_top(p, 1)[0][0])
    tracker = TrajectoryTracker(k=1)
    pairs = top_eigenpairs(p, k=1, tol=1e-10, max_iter=p.dim)
    sgd = {"name": "sgd", "momentum": 0.9, "nesterov": False}
    point, _ = tracker.add(named_shapes(p.names, p.shapes), pairs, 0.1, sgd)
    assert point["stability_ratio"] == pytest.approx(exact * 0.1 / (2 * 1.9), rel=1e-9)
    assert point["stability_threshold"] == pytest.approx(3.8 / 0.1)
    assert point["optimizer"] == "sgd" and point["stability_quantity"] == "lambda_max"
    assert point["beyond_edge"] is (exact * 0.1 / 3.8 > 1)


def test_adam_point_uses_the_eigenpairs_of_p_inverse_h() -> None:
    problems = checkpoint_problems([5, 30])
    k, beta1, eta = 2, 0.9, 0.01
    tracker = TrajectoryTracker(k=k)
    g = torch.Generator().manual_seed(1)
    previous = None
    for p in problems:
        P = torch.rand(p.dim, generator=g, dtype=torch.float64) * 2 + 0.1  # a positive diag
        H = dense_hessian(p)
        D = P.rsqrt()
        evals, Y = torch.linalg.eigh(D[:, None] * H * D[None, :])
        order = torch.argsort(evals, descending=True)[:k]
        U = D[:, None] * Y[:, order]
        U = U / U.norm(dim=0)  # eigenvectors of P⁻¹H
        assert torch.allclose((H / P[:, None]) @ U, U * evals[order], atol=1e-9)
        pairs = top_eigenpairs(p, k=k, tol=1e-11, max_iter=p.dim, preconditioner=P)
        lam_h = float(torch.linalg.eigvalsh(H)[-1])
        adam = {"name": "adam", "beta1": beta1}
        point, overlap = tracker.add(named_shapes(p.names, p.shapes), pairs, eta, adam, lam_h)
        assert point["preconditioned_lambda_max"] == pytest.approx(float(evals.max()), rel=1e-9)
        assert point["lambda_max"] == lam_h
        threshold = (2 + 2 * beta1) / ((1 - beta1) * eta)
        assert point["stability_threshold"] == pytest.approx(threshold)
        assert point["stability_ratio"] == pytest.approx(float(evals.max()) / threshold, rel=1e-9)
        for i in range(k):
            assert abs(float(pairs.eigenvectors[:, i] @ U[:, i])) == pytest.approx(1, abs=1e-6)
        if previous is not None:
            want = abs(float(previous[:, 0] @ U[:, 0]))
            assert overlap["top_overlap"] == pytest.approx(want, abs=1e-6)
        previous = U

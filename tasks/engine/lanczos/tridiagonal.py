"""Plain Lanczos for quadrature (SLQ, tasks.engine.density): the tridiagonal of `steps` steps
from a given start vector, in a sliding window of reorthogonalisation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tasks.engine.basis import Basis
from tasks.engine.lanczos.state import three_term
from tasks.engine.linear_operator import LinearOperator

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext


def lanczos_tridiagonal(
    operator: LinearOperator,
    steps: int,
    v0: Tensor,
    ctx: MeasureContext | None = None,
    progress_offset: int = 0,
    max_basis: int | None = None,
    stats: dict[str, Any] | None = None,
) -> tuple[Tensor, Tensor]:
    """`steps` Lanczos steps from unit v0, for quadrature.

    Returns the tridiagonal's diagonal α (n) and off-diagonal β (n−1); n < steps when the
    Krylov space became invariant (β ≈ 0), in which case the quadrature is exact. A `stats`
    dict receives "basis_peak", the most basis columns allocated at once, and "basis_bytes_peak",
    their bytes.

    Up to `max_basis` steps (default: all) every vector is reorthogonalised against all
    earlier ones. Past it the oldest vectors are forgotten a chunk at a time (a sliding
    window of at least max_basis − 16 recent vectors): global orthogonality is then lost as
    in plain Lanczos, and converged extreme eigenvalues reappear as ghost copies among the
    nodes. Quadrature does not suffer: finite-precision Lanczos is exact Lanczos on a matrix
    whose eigenvalues lie in tiny clusters around H's, with the start vector's weight of
    each eigenvalue shared within its cluster (Greenbaum 1989; Chen, Trogdon & Ubaru 2021),
    so the ghosts split their eigenvalue's weight and vᵀf(H)v is still approximated as well.
    """
    dim = operator.dim
    steps = min(steps, dim)
    window = steps if max_basis is None else min(steps, max_basis)
    q = v0.double() / v0.double().norm()
    Q = Basis(dim, q.device, capacity=window)
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    q_prev, beta_prev = q, 0.0
    for j in range(steps):
        if len(Q) == window:
            Q.drop_oldest_chunk()
            if len(Q) == window:  # one chunk only: the window is the recurrence's two vectors
                Q.truncate(0)
        Q.append(q)
        w = operator.matvec(q).to(torch.float64)
        alpha = float(q @ w)
        alphas.append(alpha)
        w = Q.project_out(three_term(w, alpha, q, beta_prev, q_prev), only_if_needed=True)
        beta = float(w.norm())
        scale = max(scale, abs(alpha), beta)
        if ctx is not None:
            ctx.step(progress_offset + j + 1, alpha)
        if j + 1 == steps or beta <= 1e-12 * max(scale, 1e-300):
            break
        betas.append(beta)
        q_prev, beta_prev, q = q, beta, w / beta
    if stats is not None:  # what the basis held, for tests and benchmarks
        stats["basis_peak"] = max(stats.get("basis_peak", 0), Q.peak_columns)
        held = Q.peak_columns * dim * Q.dtype.itemsize
        stats["basis_bytes_peak"] = max(stats.get("basis_bytes_peak", 0), held)
    return torch.tensor(alphas, dtype=torch.float64), torch.tensor(betas, dtype=torch.float64)

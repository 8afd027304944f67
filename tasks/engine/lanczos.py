"""Lanczos with full reorthogonalisation, stopped on the Ritz residual bound.

After j steps from a unit vector q₁ the Lanczos relation is H Q_j = Q_j T_j + β_j q_{j+1} e_jᵀ
with T_j tridiagonal. For an eigenpair T_j s = θ s, the Ritz vector y = Q_j s has residual

    ‖H y − θ y‖ = |β_j · s_j|        (s_j: last component of s)

and since H is symmetric there is an eigenvalue λ of H with |λ − θ| ≤ |β_j s_j|. We stop when
every wanted Ritz value satisfies |β_j s_j| ≤ tol·|θ|: a certificate, not a heuristic. A rule
on the change of θ between steps stops early on slowly converging spectra (λ₂/λ₁ ≈ 1); a fixed
small step count returns estimates far off. The bound is checked at every step, so Lanczos
stops as soon as it is met (fewer HVPs than eigsh, which checks only at restarts).

Each step subtracts the recurrence's αq_j + β_{j−1}q_{j−1}, then reorthogonalises fully
against all of Q (Gram–Schmidt, a second pass when the first lost accuracy): Q stays orthonormal
in float64, so no ghost copies of converged eigenvalues appear. It keeps every Lanczos vector,
dim·j float64 numbers after j steps (tasks.engine.basis stores them without copies): 88 MB per
step for an 11M-parameter network, which is why max_iter bounds the memory too. When β ≈ 0
the Krylov space is invariant: its Ritz values are exact eigenvalues; if more are wanted the
run continues from a fresh random vector orthogonal to Q (T becomes block diagonal).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from tasks.engine.basis import Basis


class LinearOperator(Protocol):
    dim: int
    hvps: int

    def matvec(self, v: Tensor) -> Tensor: ...


class NotConvergedWarning(UserWarning):
    """An estimate stopped at its iteration budget before its error bound was met."""


@dataclass
class LanczosResult:
    """Top-k algebraic eigenvalues (descending) with the bound that certifies each."""

    eigenvalues: list[float]
    residual_bounds: list[float]
    converged: bool
    iterations: int
    hvps: int
    seconds: float
    eigenvectors: Tensor | None = None  # dim×k float64, columns match eigenvalues
    most_negative: float | None = None
    most_negative_bound: float | None = None
    most_negative_converged: bool | None = None
    most_negative_eigenvector: Tensor | None = None
    history: list[float] = field(default_factory=list)  # λmax estimate per step


def _random_unit(dim: int, generator: torch.Generator, device: Any) -> Tensor:
    v = torch.randn(dim, generator=generator, dtype=torch.float64, device="cpu").to(device)
    return v / v.norm()


def _three_term(w: Tensor, alpha: float, q: Tensor, beta_prev: float, q_prev: Tensor) -> Tensor:
    """Hq − αq − β_{j−1}q_{j−1}: the recurrence's own step, before full reorthogonalisation
    removes what rounding left along the older vectors."""
    w = w - alpha * q
    return w - beta_prev * q_prev if beta_prev else w


def lanczos(
    operator: LinearOperator,
    k: int = 1,
    tol: float = 1e-6,
    max_iter: int = 300,
    *,
    most_negative: bool = False,
    return_eigenvectors: bool = False,
    seed: int = 0,
    v0: Tensor | None = None,
    ctx: Any = None,
    warn: bool = True,
) -> LanczosResult:
    """The k largest (algebraic) eigenvalues of a symmetric operator.

    Stops when all k wanted Ritz pairs satisfy |β_j s_{j,i}| ≤ tol·|θ_i| (an absolute floor of
    1e-8·|θ_max| keeps an exactly-zero eigenvalue reachable). With `most_negative`, the same
    Krylov space also yields the algebraically smallest eigenvalue; its bound is taken
    relative to the spectrum's scale, |β_j s_{j,1}| ≤ tol·max(|θ_min|, |θ_max|), since near a
    minimum it is tiny and only its size relative to λmax is meaningful. Iteration continues
    until both are met or `max_iter` (capped at dim) is reached; then `converged` is False
    and a NotConvergedWarning is raised.

    `ctx.step(iteration, estimate)` is called after each step (progress and cancellation).
    """
    start = time.perf_counter()
    dim = operator.dim
    if k < 1:
        raise ValueError("k must be at least 1")
    k = min(k, dim)
    m_max = min(max_iter, dim)
    hvps_before = operator.hvps
    gen = torch.Generator().manual_seed(seed)
    device = getattr(operator, "device", "cpu")
    q = _random_unit(dim, gen, device) if v0 is None else (v0.double() / v0.double().norm())
    Q = Basis(dim, device, capacity=m_max)
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples q_j and q_{j+1}; 0 after a restart
    history: list[float] = []
    theta = S = None
    bounds = None
    beta = 0.0
    converged = False
    scale = 0.0  # running estimate of ‖H‖ for the breakdown test
    q_prev, beta_prev = q, 0.0
    for j in range(m_max):
        Q.append(q)
        w = operator.matvec(q).to(torch.float64)
        alpha = float(q @ w)
        w = Q.project_out(_three_term(w, alpha, q, beta_prev, q_prev), only_if_needed=True)
        beta = float(w.norm())
        alphas.append(alpha)
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if j > 0:
            off = torch.tensor(betas, dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        theta, S = torch.linalg.eigh(T)  # ascending
        scale = max(scale, float(theta.abs().max()))
        bounds = (beta * S[-1, :]).abs()
        history.append(float(theta[-1]))
        if ctx is not None:
            ctx.step(j + 1, float(theta[-1]), bound=float(bounds[-1]))
        n = j + 1
        floor = 1e-8 * float(theta.abs().max())
        if n >= k:
            top = theta[-k:]
            ok = bool((bounds[-k:] <= torch.clamp(tol * top.abs(), min=floor)).all())
            if most_negative:
                ok = ok and float(bounds[0]) <= tol * max(abs(float(theta[0])), scale)
            if ok:
                converged = True
                break
        if j + 1 >= m_max:
            break
        if beta <= 1e-12 * max(scale, 1e-300):
            # invariant subspace: its Ritz values are exact; continue from a fresh direction
            fresh = Q.project_out(_random_unit(dim, gen, device))
            nrm = float(fresh.norm())
            if nrm <= 1e-10:  # Q spans everything
                converged = True
                bounds = torch.zeros_like(bounds)
                break
            betas.append(0.0)
            q_prev, beta_prev, q = q, 0.0, fresh / nrm
        else:
            betas.append(beta)
            q_prev, beta_prev, q = q, beta, w / beta
    assert theta is not None and S is not None and bounds is not None
    n = theta.shape[0]
    if n == dim and not converged:  # the whole space was spanned: T is similar to H
        converged = True
    kk = min(k, n)
    order = torch.arange(n - 1, n - 1 - kk, -1)
    result = LanczosResult(
        eigenvalues=[float(theta[i]) for i in order],
        residual_bounds=[float(bounds[i]) for i in order],
        converged=converged and kk == k,
        iterations=n,
        hvps=operator.hvps - hvps_before,
        seconds=0.0,
        history=history,
    )
    if return_eigenvectors:
        result.eigenvectors = Q.combine(S[:, order])
    if most_negative:
        result.most_negative = float(theta[0])
        result.most_negative_bound = float(bounds[0])
        result.most_negative_converged = bool(
            float(bounds[0]) <= tol * max(abs(float(theta[0])), scale) or n == dim
        )
        if return_eigenvectors:
            result.most_negative_eigenvector = Q.combine(S[:, 0])
    if not result.converged and warn:
        worst = max(
            (
                b / max(abs(t), 1e-300)
                for t, b in zip(result.eigenvalues, result.residual_bounds, strict=True)
            ),
            default=math.inf,
        )
        warnings.warn(
            f"Lanczos did NOT converge in {n} steps (max_iter={max_iter}): the worst relative "
            f"residual bound is {worst:.3g} > tol={tol:g}; the eigenvalues are estimates "
            "(lower bounds on the true top eigenvalues); raise max_iter",
            NotConvergedWarning,
            stacklevel=2,
        )
    result.seconds = time.perf_counter() - start
    return result


def lanczos_tridiagonal(
    operator: LinearOperator,
    steps: int,
    v0: Tensor,
    ctx: Any = None,
    progress_offset: int = 0,
) -> tuple[Tensor, Tensor]:
    """`steps` Lanczos steps from unit v0 with full reorthogonalisation, for quadrature.

    Returns the tridiagonal's diagonal α (n) and off-diagonal β (n−1); n < steps when the
    Krylov space became invariant (β ≈ 0), in which case the quadrature is exact.
    """
    dim = operator.dim
    steps = min(steps, dim)
    q = v0.double() / v0.double().norm()
    Q = Basis(dim, q.device, capacity=steps)
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    q_prev, beta_prev = q, 0.0
    for j in range(steps):
        Q.append(q)
        w = operator.matvec(q).to(torch.float64)
        alpha = float(q @ w)
        alphas.append(alpha)
        w = Q.project_out(_three_term(w, alpha, q, beta_prev, q_prev), only_if_needed=True)
        beta = float(w.norm())
        scale = max(scale, abs(alpha), beta)
        if ctx is not None:
            ctx.step(progress_offset + j + 1, alpha)
        if j + 1 == steps or beta <= 1e-12 * max(scale, 1e-300):
            break
        betas.append(beta)
        q_prev, beta_prev, q = q, beta, w / beta
    return torch.tensor(alphas, dtype=torch.float64), torch.tensor(betas, dtype=torch.float64)

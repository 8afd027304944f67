"""Trace and Frobenius norm of the Hessian from matrix-free products.

Hutchinson: tr(H) = E[vᵀHv] for Rademacher v (E vvᵀ = I). The mean of n samples has standard
error s/√n; the 95% interval uses the t quantile with n−1 degrees of freedom. Early stopping
compares absolute values, se ≤ rtol·|mean| after at least 10 probes: a rule on the signed
mean would stop at once whenever the running mean is negative.

Hutch++ (Meyer, Musco, Musco, Woodruff 2021): with a third of the budget form Y = H S
(S random signs), Q = orth(Y); a third computes tr(QᵀHQ) exactly; the last third runs
Hutchinson on the deflated remainder (I−QQᵀ)H(I−QQᵀ). Fast-decaying spectra (NN Hessians)
leave little in the remainder, so the error is much lower for the same HVPs. Given Q the
first term is exact, so the remainder's Hutchinson standard error is an honest error bar.

XTrace (Epperly, Tropp, Webber 2024): with m = budget/2 probes Ω, Y = HΩ = QR and
H_Q = Qᵀ(HQ). For each i, drop probe i from the sketch — the projector P_i = QQᵀ − uuᵀ with
u = Q s_i, s_i ∝ R⁻ᵀe_i — and add Hutchinson on the remainder with the held-out probe:

    t_i = tr(P_i H P_i) + ω_iᵀ(I − P_i) H (I − P_i) ω_i

Every probe serves both in the sketch and as a test vector, so the estimate is the mean of m
exchangeable t_i, each unbiased. Their spread gives the standard error, but only roughly:
the t_i share their probes and are correlated, so s/√m understates the error (a nominal 95%
interval covered 77-86% of seeded runs in bench/trace_spectra.py). Expanded with
w_i = Qᵀω_i, c_i = s_iᵀw_i and Hω_i = QRe_i, t_i needs no more products than the 2m above:

    t_i = tr H_Q − s_iᵀH_Q s_i + κ_i [−(Re_i)ᵀw_i + 2c_i (Re_i)ᵀs_i
                                      + w_iᵀH_Q w_i − 2c_i s_iᵀH_Q w_i + c_i² s_iᵀH_Q s_i]

Probes are Rademacher by default (κ_i = 1). On request they are uniform on the sphere of
radius √dim (the "improved" XTrace of the paper): (I − P_i)ω_i then points in a uniformly
random direction of the (dim − m + 1)-dimensional complement, so scaling
the held-out term by κ_i = (dim − m + 1)/‖(I − P_i)ω_i‖², ‖(I − P_i)ω_i‖² = dim − ‖w_i‖² + c_i²,
keeps it unbiased and removes the variance of the vector's length.

Block Krylov ("krylov", the default of the trace measure): deflate with a block Krylov space
instead of a one-pass sketch. Block Lanczos from b Rademacher vectors Ω builds an orthonormal
basis Q of K_p(H, Ω) = span[Ω, HΩ, …, H^{p−1}Ω] one block at a time, and the product W = HQ_j
that extends the space also gives tr(Q_jᵀHQ_j): the exact part costs one HVP per basis vector,
where Hutch++ and XTrace spend two (the sketch HΩ, then HQ). Holding the power iterates H^jΩ,
the space also captures the top of the spectrum far better than a sketch of equal size (the
"Krylov-aware" idea of Chen & Hallman 2023). Then

    tr(H) = tr(QᵀHQ) + tr((I − QQᵀ) H (I − QQᵀ)),

the first term exact, the second by Hutchinson with a third of the budget in fresh Rademacher
probes projected onto the complement. Given Q they are independent of it, so the estimate is
unbiased and the remainder's Hutchinson standard error is an honest error bar.

Frobenius: ‖H‖²_F = E‖Hv‖² over Rademacher v; report √mean with the delta-method standard
error se/(2√mean).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from tasks.engine.basis import Basis
from tasks.engine.lanczos import LinearOperator


@dataclass
class TraceEstimate:
    estimate: float
    std_error: float | None
    ci95: tuple[float, float] | None
    probes: int
    hvps: int
    seconds: float
    method: str
    converged: bool | None = None  # rtol met (None when no rtol was asked)


def t_quantile(n: int, level: float = 0.975) -> float:
    """Two-sided 95% quantile: Student t with n−1 degrees of freedom (normal for large n)."""
    if n >= 200:
        return 1.959963984540054
    try:
        from scipy.stats import t

        return float(t.ppf(level, n - 1))
    except ImportError:  # pragma: no cover - scipy ships with scikit-learn here
        return 1.959963984540054


def _rademacher(dim: int, k: int, gen: torch.Generator, device: Any) -> Tensor:
    signs = torch.randint(0, 2, (dim, k), generator=gen, dtype=torch.int8)
    return (signs.to(torch.float64) * 2 - 1).to(device)


def sphere_probes(dim: int, k: int, gen: torch.Generator, device: Any) -> Tensor:
    """k vectors uniform on the sphere of radius √dim (so E vvᵀ = I)."""
    g = torch.randn(dim, k, generator=gen, dtype=torch.float64)
    return (g * (math.sqrt(dim) / g.norm(dim=0, keepdim=True))).to(device)


def _summary(samples: list[float]) -> tuple[float, float | None, tuple[float, float] | None]:
    n = len(samples)
    x = torch.tensor(samples, dtype=torch.float64)
    mean = float(x.mean())
    if n < 2:
        return mean, None, None
    se = float(x.std(unbiased=True)) / math.sqrt(n)
    half = t_quantile(n) * se
    return mean, se, (mean - half, mean + half)


def _plus_deflated_hutchinson(
    operator: LinearOperator, Q: Basis, exact: float, g: int, gen: torch.Generator
) -> tuple[float, float | None, tuple[float, float] | None]:
    """exact + Hutchinson on (I − QQᵀ)H(I − QQᵀ) with g Rademacher probes projected off Q.

    Given Q the probes are independent of it, so their standard error is the estimate's."""
    G = Q.project_out(_rademacher(operator.dim, g, gen, Q.device))
    rest, se, _ = _summary((G * operator.matmat(G)).sum(dim=0).tolist())
    estimate = exact + rest
    ci = None if se is None else (estimate - t_quantile(g) * se, estimate + t_quantile(g) * se)
    return estimate, se, ci


def hutchinson(
    operator: LinearOperator,
    num_hvps: int = 100,
    rtol: float | None = None,
    seed: int = 0,
    ctx: Any = None,
    min_probes: int = 10,
    block: int = 10,
) -> TraceEstimate:
    """tr(H) ≈ mean vᵀHv over at most `num_hvps` Rademacher probes (blocks of `block`)."""
    start, before = time.perf_counter(), operator.hvps
    gen = torch.Generator().manual_seed(seed)
    device = getattr(operator, "device", "cpu")
    samples: list[float] = []
    converged = None if rtol is None else False
    while len(samples) < num_hvps:
        b = min(block, num_hvps - len(samples))
        V = _rademacher(operator.dim, b, gen, device)
        HV = operator.matmat(V)
        samples.extend((V * HV).sum(dim=0).tolist())
        mean, se, _ = _summary(samples)
        if ctx is not None:
            ctx.step(len(samples), mean, std_error=se)
        if rtol is not None and len(samples) >= min_probes and se is not None:
            if se <= rtol * abs(mean):
                converged = True
                break
    mean, se, ci = _summary(samples)
    return TraceEstimate(
        mean,
        se,
        ci,
        len(samples),
        operator.hvps - before,
        time.perf_counter() - start,
        "hutchinson",
        converged,
    )


def hutchpp(
    operator: LinearOperator, num_hvps: int = 100, seed: int = 0, ctx: Any = None
) -> TraceEstimate:
    """Hutch++ with the budget split in thirds; error bar from the deflated Hutchinson part."""
    start, before = time.perf_counter(), operator.hvps
    if num_hvps < 3:
        raise ValueError("Hutch++ needs at least 3 HVPs")
    gen = torch.Generator().manual_seed(seed)
    device = getattr(operator, "device", "cpu")
    dim = operator.dim
    r = min(max(1, num_hvps // 3), dim)
    S = _rademacher(dim, r, gen, device)
    Y = operator.matmat(S)
    Q, _ = torch.linalg.qr(Y)
    if ctx is not None:
        ctx.step(r, None)
    HQ = operator.matmat(Q)
    low_rank = float((Q * HQ).sum())
    if ctx is not None:
        ctx.step(2 * r, low_rank)
    g = num_hvps - 2 * r
    if r >= dim or g <= 0:  # Q spans the space: the trace is exact
        return TraceEstimate(
            low_rank,
            0.0 if r >= dim else None,
            (low_rank, low_rank) if r >= dim else None,
            0,
            operator.hvps - before,
            time.perf_counter() - start,
            "hutch++",
        )
    estimate, se, ci = _plus_deflated_hutchinson(operator, Basis.of(Q), low_rank, g, gen)
    if ctx is not None:
        ctx.step(num_hvps, estimate, std_error=se)
    return TraceEstimate(
        estimate, se, ci, g, operator.hvps - before, time.perf_counter() - start, "hutch++"
    )


def xtrace(
    operator: LinearOperator,
    num_hvps: int = 100,
    seed: int = 0,
    ctx: Any = None,
    probes: Literal["rademacher", "sphere"] = "rademacher",
) -> TraceEstimate:
    """XTrace with m = num_hvps // 2 probes; error bar from the spread of the t_i.

    Rademacher probes (κ_i = 1) by default: the residual term is then a Hutchinson estimate
    whose variance 2(‖B‖_F² − Σ b_jj²) ignores B's diagonal, which is what dominates the
    residual of network Hessians. Spherical probes (radius √n) use the normalised estimator
    with κ_i = (n − m + 1)/‖(I − P_i)ω_i‖², better on matrices with a flat diagonal.
    """
    start, before = time.perf_counter(), operator.hvps
    dim = operator.dim
    m = min(num_hvps // 2, dim)
    if m < 2:
        raise ValueError("XTrace needs at least 4 HVPs")
    gen = torch.Generator().manual_seed(seed)
    device = getattr(operator, "device", "cpu")
    if probes == "sphere":
        Omega = sphere_probes(dim, m, gen, device)
    else:
        Omega = _rademacher(dim, m, gen, device)
    Y = operator.matmat(Omega)
    Q, R = torch.linalg.qr(Y)
    diag = R.diagonal().abs()
    if float(diag.min()) <= 1e-10 * float(diag.max()):
        # the sketch is rank-deficient (H has rank < m): Hutch++ handles it exactly
        return hutchpp(operator, num_hvps - m, seed=seed, ctx=ctx)
    if ctx is not None:
        ctx.step(m, None)
    HQ = Q.T @ operator.matmat(Q)
    HQ = 0.5 * (HQ + HQ.T)
    W = Q.T @ Omega
    S = torch.linalg.solve_triangular(
        R.T, torch.eye(m, dtype=R.dtype, device=R.device), upper=False
    )
    S = S / S.norm(dim=0, keepdim=True)  # column i: s_i ∝ R⁻ᵀ e_i
    c = (S * W).sum(0)
    sHs = (S * (HQ @ S)).sum(0)
    sHw = (S * (HQ @ W)).sum(0)
    wHw = (W * (HQ @ W)).sum(0)
    Rw = (R * W).sum(0)
    Rs = (R * S).sum(0)
    if probes == "sphere":
        kappa = (dim - m + 1) / (dim - (W * W).sum(0) + c**2)
    else:
        kappa = torch.ones_like(c)
    t = torch.trace(HQ) - sHs + kappa * (-Rw + 2 * c * Rs + wHw - 2 * c * sHw + c**2 * sHs)
    estimate, se, ci = _summary(t.tolist())
    if ctx is not None:
        ctx.step(2 * m, estimate, std_error=se)
    return TraceEstimate(
        estimate, se, ci, m, operator.hvps - before, time.perf_counter() - start, "xtrace"
    )


def block_krylov(
    operator: LinearOperator,
    num_hvps: int = 100,
    seed: int = 0,
    ctx: Any = None,
    block: int = 5,
) -> TraceEstimate:
    """Block-Lanczos deflation + Hutchinson on the remainder (see the module docstring).

    Budget: g = ⌈num_hvps/3⌉ remainder probes, the rest in p = (num_hvps − g) // b blocks of
    b = `block` basis vectors (a leftover goes to the probes). When the basis spans the whole
    space the trace is exact (standard error 0). A block whose new directions are numerically
    inside the space (H of low rank) is completed with random directions: the exact part is
    exact on any orthonormal Q, so this changes only which part is sampled.
    """
    start, before = time.perf_counter(), operator.hvps
    if num_hvps < 4:
        raise ValueError("the block Krylov estimator needs at least 4 HVPs")
    gen = torch.Generator().manual_seed(seed)
    device = getattr(operator, "device", "cpu")
    dim = operator.dim
    g = math.ceil(num_hvps / 3)
    b = max(1, min(block, dim, num_hvps - g))
    blocks = min((num_hvps - g) // b, math.ceil(dim / b))
    Q = Basis(dim, device, capacity=blocks * b)
    Qj, _ = torch.linalg.qr(_rademacher(dim, b, gen, device))
    exact = 0.0
    for j in range(blocks):
        W = operator.matmat(Qj)
        exact += float((Qj * W).sum())
        Q.append(Qj)
        if ctx is not None:
            ctx.step(operator.hvps - before, None)
        room = dim - len(Q)
        if j + 1 == blocks or room == 0:
            break
        W = W[:, : min(b, room)]
        scale = W.norm(dim=0).clamp_min(1e-300)
        W = Q.project_out(W)
        dead = W.norm(dim=0) <= 1e-10 * scale
        if bool(dead.any()):
            W[:, dead] = Q.project_out(_rademacher(dim, int(dead.sum()), gen, device))
        Qj, _ = torch.linalg.qr(W)
        # W was projected before the QR; only columns the QR made up from a rank-deficient
        # block (noise) can lean on Q again, and the DGKS test finds those
        Qj, _ = torch.linalg.qr(Q.project_out(Qj, only_if_needed=True))
    if len(Q) >= dim:  # the basis spans everything: tr(QᵀHQ) is the trace
        hvps = operator.hvps - before
        return TraceEstimate(
            exact, 0.0, (exact, exact), 0, hvps, time.perf_counter() - start, "krylov"
        )
    g = num_hvps - (operator.hvps - before)
    estimate, se, ci = _plus_deflated_hutchinson(operator, Q, exact, g, gen)
    if ctx is not None:
        ctx.step(operator.hvps - before, estimate, std_error=se)
    return TraceEstimate(
        estimate, se, ci, g, operator.hvps - before, time.perf_counter() - start, "krylov"
    )


def frobenius(
    operator: LinearOperator,
    num_hvps: int = 100,
    rtol: float | None = None,
    seed: int = 0,
    ctx: Any = None,
    min_probes: int = 10,
    block: int = 10,
) -> TraceEstimate:
    """‖H‖_F ≈ √(mean ‖Hv‖²); std_error and ci95 refer to ‖H‖_F (delta method)."""
    start, before = time.perf_counter(), operator.hvps
    gen = torch.Generator().manual_seed(seed)
    device = getattr(operator, "device", "cpu")
    samples: list[float] = []
    converged = None if rtol is None else False

    def summary() -> tuple[float, float | None, tuple[float, float] | None]:
        mean, se, _ = _summary(samples)
        fro = math.sqrt(max(mean, 0.0))
        if se is None or fro == 0.0:
            return fro, None, None
        fse = se / (2 * fro)
        half = t_quantile(len(samples)) * fse
        return fro, fse, (max(fro - half, 0.0), fro + half)

    while len(samples) < num_hvps:
        b = min(block, num_hvps - len(samples))
        HV = operator.matmat(_rademacher(operator.dim, b, gen, device))
        samples.extend((HV * HV).sum(dim=0).tolist())
        fro, fse, _ = summary()
        if ctx is not None:
            ctx.step(len(samples), fro, std_error=fse)
        if rtol is not None and len(samples) >= min_probes and fse is not None:
            if fse <= rtol * fro:
                converged = True
                break
    fro, fse, ci = summary()
    return TraceEstimate(
        fro,
        fse,
        ci,
        len(samples),
        operator.hvps - before,
        time.perf_counter() - start,
        "frobenius",
        converged,
    )

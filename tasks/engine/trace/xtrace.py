"""XTrace (Epperly, Tropp, Webber 2024): with m = budget/2 probes Ω, Y = HΩ = QR and
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

Rounding (tasks.engine.trace.rounding): each t_i is tr(QᵀH̃Q) plus a held-out form, so the
level is ROUNDING_FACTOR·eps·(Σ_i a(q_i) + mean_i κ_i·a(ω_i)), with a(x) = Σ_j |x_j (H̃x)_j|;
the interval adds it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from tasks.engine.context import MeasureContext
from tasks.engine.linear_operator import LinearOperator
from tasks.engine.trace.common import Tally, TraceEstimate, rademacher, sphere_probes, summary
from tasks.engine.trace.hutchpp import hutchpp
from tasks.engine.trace.rounding import abs_mass, quadratic_rounding


def xtrace(
    operator: LinearOperator | Tensor,
    num_hvps: int = 100,
    seed: int = 0,
    ctx: MeasureContext | None = None,
    probes: Literal["rademacher", "sphere"] = "rademacher",
) -> TraceEstimate:
    """XTrace with m = num_hvps // 2 probes; error bar from the spread of the t_i.

    Rademacher probes (κ_i = 1) by default: the residual term is then a Hutchinson estimate
    whose variance 2(‖B‖_F² − Σ b_jj²) ignores B's diagonal, which is what dominates the
    residual of network Hessians. Spherical probes (radius √n) use the normalised estimator
    with κ_i = (n − m + 1)/‖(I − P_i)ω_i‖², better on matrices with a flat diagonal.
    """
    tally = Tally(operator, seed, "xtrace")
    operator, gen = tally.operator, tally.gen
    device, dim = operator.device, operator.dim
    m = min(num_hvps // 2, dim)
    if m < 2:
        raise ValueError("XTrace needs at least 4 HVPs")
    if probes == "sphere":
        Omega = sphere_probes(dim, m, gen, device)
    else:
        Omega = rademacher(dim, m, gen, device)
    Y = operator.matmat(Omega)
    Q, R = torch.linalg.qr(Y)
    diag = R.diagonal().abs()
    if float(diag.min()) <= 1e-10 * float(diag.max()):
        # the sketch is rank-deficient (H has rank < m): Hutch++ handles it exactly
        return hutchpp(operator, num_hvps - m, seed=seed, ctx=ctx)
    if ctx is not None:
        ctx.step(m, None)
    HQfull = operator.matmat(Q)
    tally.hold(Omega, Y, Q, HQfull)
    HQ = Q.T @ HQfull
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
    estimate, se, ci = summary(t.tolist())
    if ctx is not None:
        ctx.step(2 * m, estimate, std_error=se)
    mass = float(abs_mass(Q, HQfull).sum()) + float((kappa * abs_mass(Omega, Y)).mean())
    return tally.result(estimate, se, ci, m, rounding_level=quadratic_rounding(tally.eps, mass))

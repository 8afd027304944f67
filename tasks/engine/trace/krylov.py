"""Block Krylov ("krylov", the default of the trace measure): deflate with a block Krylov space
instead of a one-pass sketch. Block Lanczos from b Rademacher vectors Ω builds an orthonormal
basis Q of K_p(H, Ω) = span[Ω, HΩ, …, H^{p−1}Ω] one block at a time, and the product W = HQ_j
that extends the space also gives tr(Q_jᵀHQ_j): the exact part costs one HVP per basis vector,
where Hutch++ and XTrace spend two (the sketch HΩ, then HQ). Holding the power iterates H^jΩ,
the space also captures the top of the spectrum far better than a sketch of equal size (the
"Krylov-aware" idea of Chen & Hallman 2023). Then

    tr(H) = tr(QᵀHQ) + tr((I − QQᵀ) H (I − QQᵀ)),

the first term exact, the second by Hutchinson with a third of the budget in fresh Rademacher
probes projected onto the complement. Given Q they are independent of it, so the estimate is
unbiased and the remainder's Hutchinson standard error is an honest error bar. The interval
adds the rounding level of both parts (tasks.engine.trace.rounding): an exact trace (the basis
spans the space) reports [v − level, v + level] and is converged, limited by the rounding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tasks.engine.basis import Basis
from tasks.engine.context import MeasureContext
from tasks.engine.linear_operator import LinearOperator
from tasks.engine.trace.common import Tally, TraceEstimate, plus_deflated_hutchinson, rademacher
from tasks.engine.trace.rounding import abs_mass, quadratic_rounding


def block_krylov(
    operator: LinearOperator | Tensor,
    num_hvps: int = 100,
    seed: int = 0,
    ctx: MeasureContext | None = None,
    block: int = 5,
) -> TraceEstimate:
    """Block-Lanczos deflation + Hutchinson on the remainder (see the module docstring).

    Budget: g = ⌈num_hvps/3⌉ remainder probes, the rest in p = (num_hvps − g) // b blocks of
    b = `block` basis vectors (a leftover goes to the probes). When the basis spans the whole
    space the trace is exact (standard error 0). A block whose new directions are numerically
    inside the space (H of low rank) is completed with random directions: the exact part is
    exact on any orthonormal Q, so this changes only which part is sampled.
    """
    if num_hvps < 4:
        raise ValueError("the block Krylov estimator needs at least 4 HVPs")
    tally = Tally(operator, seed, "krylov")
    operator, gen = tally.operator, tally.gen
    device, dim = operator.device, operator.dim
    g = math.ceil(num_hvps / 3)
    b = max(1, min(block, dim, num_hvps - g))
    blocks = min((num_hvps - g) // b, math.ceil(dim / b))
    Q = Basis(dim, device, capacity=blocks * b)
    Qj, _ = torch.linalg.qr(rademacher(dim, b, gen, device))
    exact, mass = 0.0, 0.0
    for j in range(blocks):
        W = operator.matmat(Qj)
        tally.hold(Q, Qj, W)
        exact += float((Qj * W).sum())
        mass += float(abs_mass(Qj, W).sum())
        Q.append(Qj)
        if ctx is not None:
            ctx.step(tally.hvps, None)
        room = dim - len(Q)
        if j + 1 == blocks or room == 0:
            break
        W = W[:, : min(b, room)]
        scale = W.norm(dim=0).clamp_min(1e-300)
        W = Q.project_out(W)
        dead = W.norm(dim=0) <= 1e-10 * scale
        if bool(dead.any()):
            W[:, dead] = Q.project_out(rademacher(dim, int(dead.sum()), gen, device))
        Qj, _ = torch.linalg.qr(W)
        # W was projected before the QR; only columns the QR made up from a rank-deficient
        # block (noise) can lean on Q again, and the DGKS test finds those
        Qj, _ = torch.linalg.qr(Q.project_out(Qj, only_if_needed=True))
    if len(Q) >= dim:  # the basis spans everything: tr(QᵀHQ) is the trace
        return tally.exact(exact, mass)
    g = num_hvps - tally.hvps
    estimate, se, ci, rest = plus_deflated_hutchinson(tally, Q, exact, g)
    if ctx is not None:
        ctx.step(tally.hvps, estimate, std_error=se)
    level = quadratic_rounding(tally.eps, mass + rest)
    return tally.result(estimate, se, ci, g, rounding_level=level)

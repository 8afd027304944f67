"""Hutch++ (Meyer, Musco, Musco, Woodruff 2021): with a third of the budget form Y = H S
(S random signs), Q = orth(Y); a third computes tr(QᵀHQ) exactly; the last third runs
Hutchinson on the deflated remainder (I−QQᵀ)H(I−QQᵀ). Fast-decaying spectra (NN Hessians)
leave little in the remainder, so the error is much lower for the same HVPs. Given Q the
first term is exact, so the remainder's Hutchinson standard error is an honest error bar;
the interval adds the rounding level of both parts (tasks.engine.trace.rounding).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tasks.engine.basis import Basis
from tasks.engine.context import MeasureContext
from tasks.engine.linear_operator import LinearOperator
from tasks.engine.trace.common import Tally, TraceEstimate, plus_deflated_hutchinson, rademacher
from tasks.engine.trace.rounding import abs_mass, quadratic_rounding


def hutchpp(
    operator: LinearOperator | Tensor,
    num_hvps: int = 100,
    seed: int = 0,
    ctx: MeasureContext | None = None,
) -> TraceEstimate:
    """Hutch++ with the budget split in thirds; error bar from the deflated Hutchinson part."""
    if num_hvps < 3:
        raise ValueError("Hutch++ needs at least 3 HVPs")
    tally = Tally(operator, seed, "hutch++")
    op, dim = tally.operator, tally.operator.dim
    r = min(max(1, num_hvps // 3), dim)
    Q, _ = torch.linalg.qr(op.matmat(rademacher(dim, r, tally.gen, op.device)))
    if ctx is not None:
        ctx.step(r, None)
    HQ = op.matmat(Q)
    tally.hold(Q, HQ)
    low_rank = float((Q * HQ).sum())
    mass = float(abs_mass(Q, HQ).sum())
    if ctx is not None:
        ctx.step(2 * r, low_rank)
    g = num_hvps - 2 * r
    if r >= dim:  # Q spans the space: the trace is exact
        return tally.exact(low_rank, mass)
    if g <= 0:  # no budget left for the remainder: no error bar
        return tally.result(
            low_rank, None, None, 0, rounding_level=quadratic_rounding(tally.eps, mass)
        )
    estimate, se, ci, rest = plus_deflated_hutchinson(tally, Basis.of(Q), low_rank, g, (HQ,))
    if ctx is not None:
        ctx.step(num_hvps, estimate, std_error=se)
    return tally.result(
        estimate, se, ci, g, rounding_level=quadratic_rounding(tally.eps, mass + rest)
    )

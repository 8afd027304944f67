"""Hutch++ (Meyer, Musco, Musco, Woodruff 2021): with a third of the budget form Y = H S
(S random signs), Q = orth(Y); a third computes tr(QᵀHQ) exactly; the last third runs
Hutchinson on the deflated remainder (I−QQᵀ)H(I−QQᵀ). Fast-decaying spectra (NN Hessians)
leave little in the remainder, so the error is much lower for the same HVPs. Given Q the
first term is exact, so the remainder's Hutchinson standard error is an honest error bar.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from tasks.engine.basis import Basis
from tasks.engine.context import MeasureContext
from tasks.engine.linear_operator import LinearOperator, as_operator
from tasks.engine.trace.common import TraceEstimate, plus_deflated_hutchinson, rademacher


def hutchpp(
    operator: LinearOperator | Tensor,
    num_hvps: int = 100,
    seed: int = 0,
    ctx: MeasureContext | None = None,
) -> TraceEstimate:
    """Hutch++ with the budget split in thirds; error bar from the deflated Hutchinson part."""
    operator = as_operator(operator)
    start, before = time.perf_counter(), operator.hvps
    if num_hvps < 3:
        raise ValueError("Hutch++ needs at least 3 HVPs")
    gen = torch.Generator().manual_seed(seed)
    device = operator.device
    dim = operator.dim
    r = min(max(1, num_hvps // 3), dim)
    S = rademacher(dim, r, gen, device)
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
    estimate, se, ci = plus_deflated_hutchinson(operator, Basis.of(Q), low_rank, g, gen)
    if ctx is not None:
        ctx.step(num_hvps, estimate, std_error=se)
    return TraceEstimate(
        estimate, se, ci, g, operator.hvps - before, time.perf_counter() - start, "hutch++"
    )

"""Hutchinson: tr(H) = E[vᵀHv] for Rademacher v (E vvᵀ = I), and the probe loop it shares
with the Frobenius estimator.

Early stopping compares absolute values, se ≤ rtol·|estimate| after at least `min_probes`
probes: a rule on the signed mean would stop at once whenever the running mean is negative.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from tasks.engine.context import MeasureContext
from tasks.engine.linear_operator import LinearOperator
from tasks.engine.trace.common import Summary, Tally, TraceEstimate, rademacher, summary


def probe_loop(
    operator: LinearOperator | Tensor,
    sample: Callable[[Tensor, Tensor], Tensor],
    summarize: Callable[[list[float]], Summary],
    method: str,
    num_hvps: int,
    rtol: float | None,
    seed: int,
    ctx: MeasureContext | None,
    min_probes: int,
    block: int,
) -> TraceEstimate:
    """Rademacher probes V in blocks of `block`, one sample per column from `sample(V, HV)`,
    summarised by `summarize` after each block; stops at `num_hvps` probes or once
    se ≤ rtol·|estimate| (after `min_probes`)."""
    tally = Tally(operator, seed, method)
    op = tally.operator
    samples: list[float] = []
    converged = None if rtol is None else False
    while len(samples) < num_hvps:
        b = min(block, num_hvps - len(samples))
        V = rademacher(op.dim, b, tally.gen, op.device)
        samples.extend(sample(V, op.matmat(V)).tolist())
        estimate, se, _ = summarize(samples)
        if ctx is not None:
            ctx.step(len(samples), estimate, std_error=se)
        if rtol is not None and len(samples) >= min_probes and se is not None:
            if se <= rtol * abs(estimate):
                converged = True
                break
    estimate, se, ci = summarize(samples)
    return tally.result(estimate, se, ci, len(samples), converged)


def probe_estimator(
    sample: Callable[[Tensor, Tensor], Tensor],
    summarize: Callable[[list[float]], Summary],
    method: str,
    doc: str,
) -> Callable[..., TraceEstimate]:
    """An estimator over `probe_loop` with the arguments Hutchinson and Frobenius share."""

    def estimator(
        operator: LinearOperator | Tensor,
        num_hvps: int = 100,
        rtol: float | None = None,
        seed: int = 0,
        ctx: MeasureContext | None = None,
        min_probes: int = 10,
        block: int = 10,
    ) -> TraceEstimate:
        return probe_loop(
            operator, sample, summarize, method, num_hvps, rtol, seed, ctx, min_probes, block
        )

    estimator.__name__ = estimator.__qualname__ = method
    estimator.__doc__ = doc
    return estimator


def _quadratic_form(V: Tensor, HV: Tensor) -> Tensor:
    """vᵀHv for each column v of V."""
    return (V * HV).sum(dim=0)


_DOC = "tr(H) ≈ mean vᵀHv over at most `num_hvps` Rademacher probes (blocks of `block`)."
hutchinson = probe_estimator(_quadratic_form, summary, "hutchinson", _DOC)

"""Hutchinson: tr(H) = E[vᵀHv] for Rademacher v (E vvᵀ = I), and the probe loop it shares
with the Frobenius estimator.

Early stopping compares absolute values, after at least `min_probes` probes: a rule on the
signed mean would stop at once whenever the running mean is negative. The loop stops when the
error se + rounding level is ≤ rtol·|estimate| (limited_by "tolerance") or within
`convergence.ROUNDING_MULTIPLE` times the rounding level (limited_by "<dtype> rounding": more
probes cannot make the interval narrower than the rounding); a loop that reaches `num_hvps`
first is not converged (limited_by "iteration budget") and warns (NotConvergedWarning, naming
num_hvps). Without rtol `converged` is None and there is no limited_by. The rounding level
(tasks.engine.trace.rounding) is in the interval either way.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from tasks.engine import convergence
from tasks.engine.context import MeasureContext
from tasks.engine.linear_operator import LinearOperator
from tasks.engine.trace.common import Summary, Tally, TraceEstimate, rademacher, summary
from tasks.engine.trace.rounding import abs_mass, quadratic_rounding, stop_reason, warn_budget

#: rounding level of an estimate from (estimate, mean absolute mass of its probes, dim, eps)
Rounding = Callable[[float, float, int, float], float]


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
    rounding_of: Rounding,
) -> TraceEstimate:
    """Rademacher probes V in blocks of `block`, one sample per column from `sample(V, HV)`,
    summarised by `summarize` after each block; stops at `num_hvps` probes or once
    se + rounding ≤ rtol·|estimate| or se + rounding ≤ ROUNDING_MULTIPLE·rounding (after
    `min_probes`)."""
    tally = Tally(operator, seed, method)
    op = tally.operator
    samples: list[float] = []
    mass = 0.0  # Σ over probes of their absolute mass
    limited_by = None
    while len(samples) < num_hvps:
        b = min(block, num_hvps - len(samples))
        V = rademacher(op.dim, b, tally.gen, op.device)
        HV = op.matmat(V)
        tally.hold(V, HV)
        samples.extend(sample(V, HV).tolist())
        mass += float(abs_mass(V, HV).sum())
        estimate, se, _ = summarize(samples)
        if ctx is not None:
            ctx.step(len(samples), estimate, std_error=se)
        if rtol is not None and len(samples) >= min_probes and se is not None:
            level = rounding_of(estimate, mass / len(samples), op.dim, tally.eps)
            reason = stop_reason(se, estimate, rtol, level, tally.dtype)
            if convergence.is_converged(reason):
                limited_by = reason
                break
    estimate, se, ci = summarize(samples)
    level = rounding_of(estimate, mass / max(len(samples), 1), op.dim, tally.eps)
    converged = None
    if rtol is not None:
        converged = limited_by is not None
        if limited_by is None:
            limited_by = convergence.ITERATION_BUDGET
            warn_budget(
                method, se if se is not None else float("inf"), estimate, rtol, level, len(samples)
            )
    result = tally.result(estimate, se, ci, len(samples), converged, level, limited_by)
    if result.ci95 is not None and method == "frobenius":
        result.ci95 = (max(result.ci95[0], 0.0), result.ci95[1])  # a norm is not negative
    return result


def probe_estimator(
    sample: Callable[[Tensor, Tensor], Tensor],
    summarize: Callable[[list[float]], Summary],
    method: str,
    doc: str,
    rounding_of: Rounding,
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
            operator,
            sample,
            summarize,
            method,
            num_hvps,
            rtol,
            seed,
            ctx,
            min_probes,
            block,
            rounding_of,
        )

    estimator.__name__ = estimator.__qualname__ = method
    estimator.__doc__ = doc
    return estimator


def _quadratic_form(V: Tensor, HV: Tensor) -> Tensor:
    """vᵀHv for each column v of V."""
    return (V * HV).sum(dim=0)


def _trace_rounding(estimate: float, mass: float, dim: int, eps: float) -> float:
    """The mean of forms of mean absolute mass `mass`: ROUNDING_FACTOR·eps·mass."""
    return quadratic_rounding(eps, mass)


_DOC = (
    "tr(H) ≈ mean vᵀHv over at most `num_hvps` Rademacher probes (blocks of `block`); ci95 "
    "includes the rounding level ROUNDING_FACTOR·eps·mean_v Σ_j |v_j (Hv)_j|."
)
hutchinson = probe_estimator(_quadratic_form, summary, "hutchinson", _DOC, _trace_rounding)

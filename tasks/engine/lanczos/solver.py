"""`lanczos`: the k largest eigenvalues of a symmetric operator, in a bounded basis, run as
budget → steps (with restarts) → verification → verdict (the package docstring says why)."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from torch import Tensor

from tasks.engine.lanczos.options import LanczosBudget, LanczosOptions
from tasks.engine.lanczos.state import LanczosState
from tasks.engine.lanczos.verdict import LanczosResult, verdict, warn_about
from tasks.engine.lanczos.verification import (
    ResidualCheck,
    measure_residuals,
    meets_contract,
    needs_measuring,
)
from tasks.engine.linear_operator import LinearOperator, as_operator

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext

#: each time the measured residuals overrule the bound, the bound is asked this much more
STRICTER = 0.25


def lanczos(
    operator: LinearOperator | Tensor,
    options: LanczosOptions | None = None,
    *,
    v0: Tensor | None = None,
    ctx: MeasureContext | None = None,
    **fields: Any,
) -> LanczosResult:
    """The k largest (algebraic) eigenvalues of a symmetric operator, in a bounded basis.

    `options` (a `LanczosOptions`; its fields may also be given as keywords, which override
    it): `tol=None` (the default) is as tight as the products' dtype allows (`default_tol`):
    below float64 the run stops at the rounding floor, in float64 at 1e-10 relative. A step
    count stops the run when all k wanted Ritz pairs satisfy |β_n s_{n,i}| ≤
    max(tol·|θ_i|, atol), or lie below the rounding level; where the products are not
    float64 (or the basis was restarted) the wanted Ritz vectors' residuals are then
    measured, and the run goes on while they say the error estimate does not meet the
    contract (package docstring). With `most_negative`, the same Krylov space also yields
    the algebraically smallest eigenvalue; its target is taken relative to the spectrum's
    scale, tol·max(|θ_min|, |θ_max|), since near a minimum it is tiny and only its size
    relative to λmax is meaningful. `max_iter` steps (HVPs) at most; a run it stopped before
    the contract was met is not `converged` (limited_by "iteration budget") and a
    NotConvergedWarning says so. At most `max_basis` vectors are held (default
    `default_max_basis(k, most_negative)`); past that the basis is restarted (thick
    restart) and a RestartedWarning says so. `hvp_eps` overrides the unit roundoff of the
    products (taken from the operator's problem dtype, float64 otherwise). `v0`: the start
    vector (a seeded random one otherwise).

    `ctx.step(iteration, estimate)` is called after each step (progress and cancellation).
    """
    options = dataclasses.replace(options or LanczosOptions(), **fields)
    operator = as_operator(operator)
    start = time.perf_counter()
    budget = LanczosBudget.plan(options, operator)
    hvps_before = operator.hvps
    state = LanczosState(operator, budget, options, v0)
    check = _iterate(state, ctx)
    state.settle()
    if check is None and (
        needs_measuring(budget.eps, state.restarts) or options.return_eigenvectors
    ):
        products = needs_measuring(budget.eps, state.restarts)
        check = measure_residuals(state, options.return_eigenvectors, products=products)
    result = verdict(state, check)
    result.hvps = operator.hvps - hvps_before
    warn_about(result, options, budget.k, stacklevel=2)
    result.seconds = time.perf_counter() - start
    return result


def _iterate(state: LanczosState, ctx: MeasureContext | None) -> ResidualCheck | None:
    """Step until the bounds meet the contract (and, where they must be checked, the
    measured residuals too: the check that passed is returned), the step budget is spent,
    or the Krylov space spans everything.

    Products below float64 round more coarsely than the a-priori level on a large model, and
    the bound would be held to a floor the products cannot reach: once the top Ritz value
    has settled, the residuals (and the products' rounding) are measured once, which either
    meets the contract there or sets the floor the bounds are held to from then on."""
    strict = 1.0
    probe = needs_measuring(state.budget.eps, 0)
    while True:
        state.step()
        if ctx is not None:
            ctx.step(state.steps, float(state.theta[-1]), bound=float(state.bounds[-1]))
        measure = state.bound_met(strict)
        if measure or (probe and state.n >= state.budget.k and state.settled()):
            if not needs_measuring(state.budget.eps, state.restarts):
                return None
            # the bound rests on the computed relation; the measured residuals decide
            check = measure_residuals(state, state.options.return_eigenvectors)
            if meets_contract(check, state):
                return check
            state.measured_level = max(state.measured_level, check.level)
            probe = False
            if measure:
                strict *= STRICTER
        if state.steps >= state.budget.max_steps or not state.advance():
            return None

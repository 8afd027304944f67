"""What a Lanczos run reports: the eigenvalues with their bounds and error estimates, and the
verdict of the convergence contract (tasks.engine.convergence) on each: `converged` and why
the run stopped (`limited_by`). The warnings a budget or a restart raise are written here."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tasks.engine.convergence import (
    ITERATION_BUDGET,
    ROUNDING_MULTIPLE,
    NotConvergedWarning,
    classify,
    is_converged,
    rounding,
    worst,
)
from tasks.engine.lanczos.options import LanczosOptions
from tasks.engine.lanczos.state import LanczosState
from tasks.engine.lanczos.verification import ResidualCheck, bottom_error, error_estimates
from tasks.engine.memory import working_bytes
from tasks.engine.precision import rounding_level


class RestartedWarning(UserWarning):
    """Lanczos compressed its basis (thick restart) to stay within its memory budget."""


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
    error_estimates: list[float] = field(default_factory=list)
    most_negative_error: float | None = None
    rounding_level: float = 0.0  # absolute; see tasks.engine.lanczos
    hvp_eps: float = 0.0  # unit roundoff of the HVPs' dtype
    measured_residuals: list[float] | None = None  # ‖H̃y − θy‖, HVPs not in float64 only
    restarts: int = 0
    max_basis: int = 0
    basis_peak: int = 0  # most basis vectors allocated at once
    basis_bytes_peak: int = 0
    # the basis was sized from: bytes, whether memory (not max_basis) set its size, and the
    # peak bytes of basis and working vectors per parameter (tasks.engine.memory)
    memory_budget_bytes: int = 0
    basis_limited_by_memory: bool = False
    bytes_per_parameter: float = 0.0
    basis_spilled: bool = False  # the basis was held in a file (tasks.engine.file_columns)
    basis_file_bytes_peak: int = 0
    tol: float = 0.0  # the relative tol used (the dtype's default when none was given)
    atol: float = 0.0
    # why the run stopped (tasks.engine.convergence): the worst of the top k, then each
    limited_by: str = ITERATION_BUDGET
    limited_by_each: list[str] = field(default_factory=list)
    most_negative_limited_by: str | None = None


def verdict(state: LanczosState, check: ResidualCheck | None) -> LanczosResult:
    """The result of the run in `state`, its error estimates from the bounds (and `check`'s
    measured residuals, when taken), each eigenvalue classified under the contract: within
    the target, at the rounding floor, or stopped by the iteration budget."""
    b, bounds, theta = state.budget, state.bounds, state.theta
    order = state.top_order()
    floor = rounding_level(b.eps, state.scale)
    result = LanczosResult(
        eigenvalues=[float(theta[i]) for i in order],
        residual_bounds=[float(bounds[i]) for i in order],
        converged=False,
        iterations=state.steps,
        hvps=0,
        seconds=0.0,
        history=state.history,
        rounding_level=floor,
        hvp_eps=b.eps,
        restarts=state.restarts,
        max_basis=b.max_basis,
        basis_peak=state.Q.peak_columns,
        basis_bytes_peak=state.bytes_peak,
        memory_budget_bytes=b.memory.have_bytes if b.memory else 0,
        basis_limited_by_memory=bool(b.memory and b.memory.limited_by_memory),
        basis_spilled=state.Q.spill,
        basis_file_bytes_peak=state.file_bytes_peak,
        bytes_per_parameter=(
            state.bytes_peak + working_bytes(b.dim, b.basis_dtype, spilled=state.Q.spill)
        )
        / max(b.dim, 1),
        tol=b.tol,
        atol=b.atol,
    )
    errors = [max(float(bounds[i]), floor) for i in order]
    negative_error = max(float(bounds[0]), floor)
    if check is not None and check.measured:
        floor = result.rounding_level = check.level
        result.measured_residuals = check.measured
        errors = error_estimates(check, bounds, order.tolist())
        if check.bottom is not None:
            negative_error = bottom_error(check, bounds)
    result.error_estimates = errors
    top_target, _ = state.targets()
    limits = [
        classify(e, float(t), floor, b.dtype, ITERATION_BUDGET)
        for e, t in zip(errors, top_target.flip(0), strict=True)
    ]
    if state.exact:  # no budget stopped it: what the estimate holds beyond the tol is rounding
        limits = [v if is_converged(v) else rounding(b.dtype) for v in limits]
    limits += [ITERATION_BUDGET] * (b.k - len(order))  # max_iter < k: some never computed
    result.limited_by_each = limits
    result.limited_by = worst(limits)
    result.converged = is_converged(result.limited_by)
    if check is not None and state.options.return_eigenvectors:
        result.eigenvectors = torch.stack(check.vectors, dim=1).double()
    if b.most_negative:
        _most_negative(result, state, check, negative_error, floor)
    return result


def _most_negative(
    result: LanczosResult,
    state: LanczosState,
    check: ResidualCheck | None,
    error: float,
    floor: float,
) -> None:
    """The most negative eigenvalue's figures and verdict, its target relative to the
    spectrum's scale."""
    b = state.budget
    result.most_negative = float(state.theta[0])
    result.most_negative_bound = float(state.bounds[0])
    result.most_negative_error = error
    _, bottom_target = state.targets()
    limit = classify(error, bottom_target, floor, b.dtype, ITERATION_BUDGET)
    result.most_negative_limited_by = (
        rounding(b.dtype) if state.exact and not is_converged(limit) else limit
    )
    result.most_negative_converged = is_converged(result.most_negative_limited_by)
    if state.options.return_eigenvectors:
        measured = check.bottom_vector if check is not None else None
        result.most_negative_eigenvector = (
            measured.double() if measured is not None else state.ritz_vector(0)
        )


def warn_about(result: LanczosResult, options: LanczosOptions, k: int, stacklevel: int) -> None:
    """A RestartedWarning when the basis was restarted, a NotConvergedWarning when a budget
    stopped the run (`options.warn` False: neither); `k` the top eigenvalues computed."""
    if not options.warn:
        return
    if result.restarts:
        fix = (
            f"the memory budget ({result.memory_budget_bytes} bytes) holds no more: raise "
            "memory_budget_bytes or give the worker more memory"
            if result.basis_limited_by_memory
            else "raise max_basis"
        )
        warnings.warn(
            f"Lanczos restarted {result.restarts} times (thick restart) to hold at most "
            f"{result.max_basis} basis vectors; the bounds still hold, but it took "
            f"{result.iterations} steps: {fix} to restart less",
            RestartedWarning,
            stacklevel=stacklevel + 1,
        )
    why = budget_message(result, options.max_iter, k)
    if why:
        warnings.warn(why, NotConvergedWarning, stacklevel=stacklevel + 1)


def budget_message(result: LanczosResult, max_iter: int, k: int) -> str | None:
    """The NotConvergedWarning's text when a budget stopped the run, else None."""
    stopped = [v for v in [result.limited_by, result.most_negative_limited_by] if v]
    budget = next((v for v in stopped if not is_converged(v)), None)
    if budget is None:
        return None
    which = []
    if not is_converged(result.limited_by):
        which.append(_top_shortfall(result, k))
    if result.most_negative_limited_by and not is_converged(result.most_negative_limited_by):
        which.append(
            "the most negative eigenvalue likely overestimates the true one, by up to its "
            f"error estimate ({result.most_negative_error:.3g})"
        )
    asked = [f"tol={result.tol:g}"] if result.tol else []
    asked += [f"atol={result.atol:g}"] if result.atol else []
    floor = f"{ROUNDING_MULTIPLE:g}× the rounding level ({result.rounding_level:.3g})"
    met = f"{', '.join(asked)} or {floor}" if asked else floor
    more = max(2 * max_iter, max_iter + 50)
    restarts = (
        f"; raise max_basis to restart less ({result.restarts} restarts)" if result.restarts else ""
    )
    return (
        f"Lanczos did NOT converge: its {budget} stopped it after {result.iterations} steps "
        f"(max_iter={max_iter}) before the error estimates met {met}; {'; '.join(which)}; "
        f"raise max_iter (to {more} or more){restarts}"
    )


def _top_shortfall(result: LanczosResult, k: int) -> str:
    """How far the unconverged top eigenvalues may lie below the true ones."""
    worst_rel = max(
        (
            e / max(abs(t), 1e-300)
            for t, e, v in zip(
                result.eigenvalues, result.error_estimates, result.limited_by_each, strict=False
            )
            if not is_converged(v)
        ),
        default=math.inf,
    )
    one = k == 1
    return (
        f"the top {'eigenvalue' if one else f'{k} eigenvalues'} likely "
        f"underestimate{'s' if one else ''} the true one{'' if one else 's'}, by up "
        f"to {'its' if one else 'their'} error estimate{'' if one else 's'} "
        f"(worst {worst_rel:.3g} relative)"
    )

"""Lanczos with full reorthogonalisation in a bounded basis (thick restart), stopped on the
Ritz residual bound, with an error estimate that includes the HVPs' rounding.

After n steps from a unit vector q₁ the Lanczos relation is H Q_n = Q_n T_n + β_n q_{n+1} e_nᵀ.
For an eigenpair T_n s = θ s, the Ritz vector y = Q_n s has residual

    ‖H y − θ y‖ = |β_n · s_n|        (s_n: last component of s)

and since H is symmetric there is an eigenvalue λ of H with |λ − θ| ≤ |β_n s_n|. That is all
the residual bound says: θ is near *some* eigenvalue, not necessarily the i-th largest (a
random start makes missing one unlikely, not impossible), and it is a bound only for the
operator that was applied. The HVPs are computed in the model's dtype: in float32 the applied
operator differs from the Hessian by rounding of about eps₃₂·‖H‖ (eps₃₂ = 1.2e-7), and no
residual can certify an eigenvalue more finely than that. So each eigenvalue gets

    error_estimate = max(residual bound, measured residual + rounding level)

with rounding level = ROUNDING_FACTOR · eps_dtype · ‖H‖ (‖H‖ ≈ the largest |Ritz value|).
When the HVPs are not float64, or the basis was restarted (every restart adds rounding to the
Lanczos relation that the bound rests on), each wanted Ritz vector y is multiplied once more:
the measured residual ‖H̃y − θy‖/‖y‖ under the computed product H̃ then enters, and for
float32 HVPs the rounding level is raised to the measured size ‖H̃(3y)/3 − H̃y‖ of the
products' rounding when that is larger (scaling by 3 changes every rounding; a power of two
would not). On float32 test models the true λ errors were 0.01-8·eps₃₂·‖H‖, at most a quarter
of this estimate (tests/engine/test_error_estimates.py); the rounding of activations fed to
the products grows with the data, which is why it is measured and not assumed. It remains an
estimate, not a bound: it does not see rounding that repeats identically in every product.

The convergence contract (tasks/engine/convergence.py): an eigenvalue is `converged` when its
error estimate is ≤ max(tol·|θ|, atol) (limited_by "tolerance") or ≤ ROUNDING_MULTIPLE ×
the rounding level (limited_by "<dtype> rounding": as accurate as the products allow).
`tol=None`, the default, is as tight as the dtype allows: 0 below float64 (stop at the
rounding floor), 1e-10 in float64. The run stops on the bound — every wanted Ritz value
has |β s| ≤ max(tol·|θ|, atol, rounding level) — and, where the residuals are measured,
only once the measured error estimates meet the contract as well; when they do not, it
goes on with a four times stricter bound. Only `max_iter` can stop it short of that: then
`converged` is False, limited_by "iteration budget", and a NotConvergedWarning names
max_iter and the steps taken. In exact arithmetic Ritz values lie below the top
eigenvalues (and above the most negative); with rounding they can land on either side, so
an unconverged result likely underestimates them by up to its error estimate, no more is
claimed. `atol` (default 0) accepts an absolute accuracy instead; near zero the rounding
clause already applies (the rounding level is relative to ‖H‖, not to θ).

Each step subtracts the recurrence's αq_j + β_{j−1}q_{j−1}, then reorthogonalises fully
against the basis (Gram–Schmidt, a second pass when the first lost accuracy): Q stays
orthonormal, so no ghost copies of converged eigenvalues appear. Memory is the basis: at most
`max_basis` vectors (default 40, or 2(k + 1) + 10 for large k) of dim numbers, held in
float64 on the operator's device unless asked otherwise (`basis_dtype=float32`,
`basis_device="cpu"`). When the basis is full, thick restart (Wu & Simon 2000; the symmetric
case of Stewart's Krylov–Schur) keeps the wanted Ritz vectors and about half the remaining
room of the next ones, Q ← Q·S[:, kept] in place, with the projected matrix

    T = [ diag(θ_kept)   s ]        s_i = β_n · S[n, i]
        [ sᵀ             α ] …      (then tridiagonal again)

and continues from q_{n+1}; the relation above, and so every bound, still holds. Until the
basis fills the path is the same as unrestarted Lanczos, step for step. `restarts` reports how
often the basis was compressed (each restart also costs O(dim·max_basis²) flops). When β ≈ 0
the Krylov space is invariant: its Ritz values are exact eigenvalues; if more are wanted the
run continues from a fresh random vector orthogonal to Q.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tasks.engine.basis import Basis
from tasks.engine.convergence import (
    ITERATION_BUDGET,
    ROUNDING_MULTIPLE,
    NotConvergedWarning,
    classify,
    default_tol,
    is_converged,
    rounding,
    worst,
)
from tasks.engine.linear_operator import LinearOperator, as_operator

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext

#: basis vectors held by default (the budget); raised to 2·wanted + 10 for large k
DEFAULT_MAX_BASIS = 40

#: rounding level = ROUNDING_FACTOR · eps(HVP dtype) · ‖H‖; see `rounding_level`
ROUNDING_FACTOR = 2.0


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
    rounding_level: float = 0.0  # absolute; see the module docstring
    hvp_eps: float = 0.0  # unit roundoff of the HVPs' dtype
    measured_residuals: list[float] | None = None  # ‖H̃y − θy‖, HVPs not in float64 only
    restarts: int = 0
    max_basis: int = 0
    basis_peak: int = 0  # most basis vectors allocated at once
    basis_bytes_peak: int = 0
    tol: float = 0.0  # the relative tol used (the dtype's default when none was given)
    atol: float = 0.0
    # why the run stopped (tasks.engine.convergence): the worst of the top k, then each
    limited_by: str = ITERATION_BUDGET
    limited_by_each: list[str] = field(default_factory=list)
    most_negative_limited_by: str | None = None


def operator_dtype(operator: Any) -> torch.dtype:
    """The dtype the operator computes its products in: its `compute_dtype`, its problem's
    dtype, or those of the operator it wraps (`inner`); float64 if none says."""
    for _ in range(8):
        if operator is None:
            break
        dtype = getattr(operator, "compute_dtype", None)
        if dtype is None:
            dtype = getattr(getattr(operator, "problem", None), "dtype", None)
        if dtype is not None:
            return dtype
        operator = getattr(operator, "inner", None)
    return torch.float64


def operator_eps(operator: Any) -> float:
    """Unit roundoff of the dtype the operator computes its products in (float64 if unknown)."""
    return float(torch.finfo(operator_dtype(operator)).eps)


def dtype_for_eps(eps: float) -> torch.dtype:
    """The floating dtype whose unit roundoff is `eps` (the nearest coarser one otherwise)."""
    dtypes = sorted(
        (torch.float64, torch.float32, torch.bfloat16, torch.float16),
        key=lambda d: torch.finfo(d).eps,
    )
    return next((d for d in dtypes if torch.finfo(d).eps >= eps * (1 - 1e-9)), dtypes[-1])


def rounding_level(eps: float, norm: float) -> float:
    """The smallest eigenvalue error products in a dtype of unit roundoff eps can certify."""
    return ROUNDING_FACTOR * eps * norm


def default_max_basis(k: int, most_negative: bool = False) -> int:
    return max(DEFAULT_MAX_BASIS, 2 * (k + int(most_negative)) + 10)


def _random_unit(dim: int, generator: torch.Generator, device: Any) -> Tensor:
    v = torch.randn(dim, generator=generator, dtype=torch.float64, device="cpu").to(device)
    return v / v.norm()


def _three_term(w: Tensor, alpha: float, q: Tensor, beta_prev: float, q_prev: Tensor) -> Tensor:
    """Hq − αq − β_{j−1}q_{j−1}: the recurrence's own step, before full reorthogonalisation
    removes what rounding left along the older vectors."""
    w = w - alpha * q
    return w - beta_prev * q_prev if beta_prev else w


def _kept(n: int, wanted_top: int, wanted_bottom: int, room: int) -> Tensor:
    """Indices (ascending Ritz order) of the Ritz vectors a thick restart keeps: the wanted
    ones and about half of the remaining room of their neighbours, split between the ends
    in proportion to what is wanted there."""
    extra = max(0, (room - wanted_top - wanted_bottom) // 2)
    bottom_extra = (extra * wanted_bottom) // (wanted_top + wanted_bottom) if wanted_bottom else 0
    top = wanted_top + extra - bottom_extra
    bottom = wanted_bottom + bottom_extra if wanted_bottom else 0
    idx = list(range(bottom)) + list(range(n - top, n))
    return torch.tensor(sorted(set(idx)), dtype=torch.long)


def lanczos(
    operator: LinearOperator | Tensor,
    k: int = 1,
    tol: float | None = None,
    max_iter: int = 300,
    *,
    most_negative: bool = False,
    return_eigenvectors: bool = False,
    seed: int = 0,
    v0: Tensor | None = None,
    ctx: MeasureContext | None = None,
    warn: bool = True,
    max_basis: int | None = None,
    basis_dtype: torch.dtype = torch.float64,
    basis_device: Any = None,
    atol: float = 0.0,
    hvp_eps: float | None = None,
) -> LanczosResult:
    """The k largest (algebraic) eigenvalues of a symmetric operator, in a bounded basis.

    `tol=None` (the default) is as tight as the products' dtype allows (`default_tol`): below
    float64 the run stops at the rounding floor, in float64 at 1e-10 relative. A step count
    stops the run when all k wanted Ritz pairs satisfy |β_n s_{n,i}| ≤ max(tol·|θ_i|, atol),
    or lie below the rounding level; where the products are not float64 (or the basis was
    restarted) the wanted Ritz vectors' residuals are then measured, and the run goes on
    while they say the error estimate does not meet the contract (module docstring). With
    `most_negative`, the same Krylov space also yields the algebraically smallest
    eigenvalue; its target is taken relative to the spectrum's scale,
    tol·max(|θ_min|, |θ_max|), since near a minimum it is tiny and only its size relative to
    λmax is meaningful. `max_iter` steps (HVPs) at most; a run it stopped before the
    contract was met is not `converged` (limited_by "iteration budget") and a
    NotConvergedWarning says so. At most `max_basis` vectors are held (default
    `default_max_basis(k, most_negative)`); past that the basis is restarted (thick
    restart) and a RestartedWarning says so. `hvp_eps` overrides the unit roundoff of the
    products (taken from the operator's problem dtype, float64 otherwise).

    `ctx.step(iteration, estimate)` is called after each step (progress and cancellation).
    """
    operator = as_operator(operator)
    start = time.perf_counter()
    dim = operator.dim
    if k < 1:
        raise ValueError("k must be at least 1")
    k = min(k, dim)
    wanted_bottom = int(most_negative)
    wanted = min(k + wanted_bottom, dim)
    if max_basis is None:
        m = default_max_basis(k, most_negative)
    else:
        if max_basis < wanted + 2 and max_basis < dim:
            raise ValueError(
                f"max_basis={max_basis} is too small for k={k}"
                f"{' and most_negative' if most_negative else ''}: the basis must hold the "
                f"{wanted} wanted vectors and room to grow, at least {wanted + 2}; raise "
                f"max_basis (2·{wanted} + 10 or more converges in far fewer restarts)"
            )
        m = max_basis
    m = min(m, dim)
    max_steps = max_iter if m < dim else min(max_iter, dim)
    if hvp_eps is None:
        dtype = operator_dtype(operator)
        eps = float(torch.finfo(dtype).eps)
    else:
        dtype, eps = dtype_for_eps(hvp_eps), float(hvp_eps)
    tol = default_tol(dtype) if tol is None else float(tol)
    hvps_before = operator.hvps
    gen = torch.Generator().manual_seed(seed)
    device = operator.device
    q = _random_unit(dim, gen, device) if v0 is None else (v0.double() / v0.double().norm())
    Q = Basis(dim, device if basis_device is None else basis_device, capacity=m, dtype=basis_dtype)
    T = torch.zeros(m, m, dtype=torch.float64)
    history: list[float] = []
    theta = S = bounds = None
    beta = 0.0
    exact = False  # the Krylov space spans everything: the Ritz values are the eigenvalues
    scale = 0.0  # running estimate of ‖H‖ (largest |Ritz value|)
    q_prev, beta_prev = q, 0.0
    coupling: Tensor | None = None  # after a thick restart: couplings of q with kept vectors
    restarts = 0
    steps = 0
    n = 0
    bytes_peak = 0
    strict = 1.0  # lowered each time the measured residuals overrule the bound
    check: _Check | None = None  # the measured residuals of the final state, once passed

    def targets(theta: Tensor) -> tuple[Tensor, float]:
        top = torch.clamp(tol * theta[-k:].abs(), min=atol)
        bottom = max(tol * max(abs(float(theta[0])), scale), atol)
        return top, bottom

    def measure(keep: bool, products: bool = True) -> _Check:
        assert theta is not None and S is not None
        order = torch.arange(n - 1, n - 1 - min(k, n), -1).tolist()
        bottom = 0 if most_negative else None
        return _measure(operator, Q, S, theta, order, bottom, eps, scale, device, keep, products)

    while True:
        Q.append(q)
        bytes_peak = max(bytes_peak, Q.nbytes)
        n += 1
        steps += 1
        w = operator.matvec(q).to(torch.float64)
        alpha = float(q @ w)
        if coupling is not None:
            w = w - alpha * q - Q.combine(torch.cat([coupling, coupling.new_zeros(1)]))
            coupling = None
        else:
            w = _three_term(w, alpha, q, beta_prev, q_prev)
        w = Q.project_out(w, only_if_needed=True)
        beta = float(w.norm())
        T[n - 1, n - 1] = alpha
        theta, S = torch.linalg.eigh(T[:n, :n])  # ascending
        scale = max(scale, float(theta.abs().max()))
        bounds = (beta * S[-1, :]).abs()
        history.append(float(theta[-1]))
        if ctx is not None:
            ctx.step(steps, float(theta[-1]), bound=float(bounds[-1]))
        if n >= k:
            floor = rounding_level(eps, scale)
            top_target, bottom_target = targets(theta)
            ok = bool((bounds[-k:] <= strict * torch.clamp(top_target, min=floor)).all())
            if most_negative:
                ok = ok and float(bounds[0]) <= strict * max(bottom_target, floor)
            if ok:
                if not _needs_measuring(eps, restarts):
                    break
                # the bound rests on the computed relation; the measured residuals decide
                check = measure(return_eigenvectors)
                if _meets(check, bounds, theta, targets, k):
                    break
                check = None
                strict *= 0.25
        if steps >= max_steps:
            break
        invariant = beta <= 1e-12 * max(scale, 1e-300)
        if n == m:  # the basis is full: thick restart
            if m >= dim:
                exact = True  # T is similar to H: every Ritz value is exact
                bounds = torch.zeros_like(bounds)
                break
            keep = _kept(n, k, wanted_bottom, m)
            p = int(keep.numel())
            Q.transform(S[:, keep])
            restarts += 1
            T.zero_()
            T[:p, :p] = torch.diag(theta[keep])
            if invariant:
                fresh = Q.project_out(_random_unit(dim, gen, device))
                q = fresh / fresh.norm()
                coupling = torch.zeros(p, dtype=torch.float64)
            else:
                s = beta * S[-1, keep]
                T[p, :p] = s
                T[:p, p] = s
                coupling = s
                q = w / beta
            n = p
            continue
        if invariant:
            # invariant subspace: its Ritz values are exact; continue from a fresh direction
            fresh = Q.project_out(_random_unit(dim, gen, device))
            nrm = float(fresh.norm())
            if nrm <= 1e-10:  # Q spans everything
                exact = True
                bounds = torch.zeros_like(bounds)
                break
            q_prev, beta_prev, q = q, 0.0, fresh / nrm
        else:
            T[n, n - 1] = T[n - 1, n] = beta
            q_prev, beta_prev, q = q, beta, w / beta
    assert theta is not None and S is not None and bounds is not None
    if n == dim and restarts == 0 and not exact:  # T is similar to H
        exact = True
        bounds = torch.zeros_like(bounds)
    kk = min(k, n)
    order = torch.arange(n - 1, n - 1 - kk, -1)
    floor = rounding_level(eps, scale)
    result = LanczosResult(
        eigenvalues=[float(theta[i]) for i in order],
        residual_bounds=[float(bounds[i]) for i in order],
        converged=False,
        iterations=steps,
        hvps=0,
        seconds=0.0,
        history=history,
        rounding_level=floor,
        hvp_eps=eps,
        restarts=restarts,
        max_basis=m,
        basis_peak=Q.peak_columns,
        basis_bytes_peak=bytes_peak,
        tol=tol,
        atol=atol,
    )
    # HVPs below float64, or a basis restarted (each restart adds rounding to the Lanczos
    # relation the bound rests on): the Ritz vectors' residuals measured directly
    if check is None and (_needs_measuring(eps, restarts) or return_eigenvectors):
        check = measure(return_eigenvectors, products=_needs_measuring(eps, restarts))
    errors = [max(float(bounds[i]), floor) for i in order]
    bottom_error = max(float(bounds[0]), floor)
    if check is not None and check.measured:
        floor = result.rounding_level = check.level
        result.measured_residuals = check.measured
        errors = _errors(check, bounds, order.tolist())
        if check.bottom is not None:
            bottom_error = max(float(bounds[0]), check.bottom + floor)
    result.error_estimates = errors
    top_target, bottom_target = targets(theta)
    budget = ITERATION_BUDGET
    limits = [
        classify(e, float(t), floor, dtype, budget)
        for e, t in zip(errors, top_target.flip(0), strict=True)
    ]
    if exact:  # no budget stopped it: what the estimate holds beyond the tol is rounding
        limits = [v if is_converged(v) else rounding(dtype) for v in limits]
    limits += [budget] * (k - kk)  # max_iter < k: some were never computed
    result.limited_by_each = limits
    result.limited_by = worst(limits)
    result.converged = is_converged(result.limited_by)
    if check is not None and return_eigenvectors:
        result.eigenvectors = torch.stack(check.vectors, dim=1)
    if most_negative:
        result.most_negative = float(theta[0])
        result.most_negative_bound = float(bounds[0])
        result.most_negative_error = bottom_error
        limit = classify(bottom_error, bottom_target, floor, dtype, budget)
        result.most_negative_limited_by = (
            rounding(dtype) if exact and not is_converged(limit) else limit
        )
        result.most_negative_converged = is_converged(result.most_negative_limited_by)
        if return_eigenvectors:
            result.most_negative_eigenvector = (
                check.bottom_vector
                if check is not None and check.bottom_vector is not None
                else Q.combine(S[:, 0]).to(device)
            )
    result.hvps = operator.hvps - hvps_before
    if restarts and warn:
        warnings.warn(
            f"Lanczos restarted {restarts} times (thick restart) to hold at most {m} basis "
            f"vectors; the bounds still hold, but it took {steps} steps: raise max_basis to "
            "restart less",
            RestartedWarning,
            stacklevel=2,
        )
    if warn:
        why = _budget_message(result, max_iter, k)
        if why:
            warnings.warn(why, NotConvergedWarning, stacklevel=2)
    result.seconds = time.perf_counter() - start
    return result


@dataclass
class _Check:
    """The wanted Ritz vectors' residuals under fresh products, and the rounding level."""

    measured: list[float]  # ‖H̃y − θy‖/‖y‖, top Ritz values first
    level: float
    vectors: list[Tensor]  # the Ritz vectors, when kept
    bottom: float | None = None  # the most negative one's residual
    bottom_vector: Tensor | None = None


def _needs_measuring(eps: float, restarts: int) -> bool:
    """Whether the bound alone may not be trusted: products below float64 (their rounding
    differs from product to product), or a restarted basis."""
    return eps > 1e-12 or restarts > 0


def _measure(
    operator: LinearOperator,
    Q: Basis,
    S: Tensor,
    theta: Tensor,
    order: list[int],
    bottom: int | None,
    eps: float,
    scale: float,
    device: Any,
    keep: bool,
    products: bool = True,
) -> _Check:
    """One product per Ritz vector in `order` (and `bottom`): its residual ‖H̃y − θy‖/‖y‖,
    and, below float64, the products' rounding measured on the first as ‖H̃(3y)/3 − H̃y‖
    (scaling by 3 changes every rounding; a power of two would not). Without `products`
    only the vectors (for `keep`)."""
    level = rounding_level(eps, scale)
    out = _Check([], level, [])
    for rank, i in enumerate([*order, *([] if bottom is None else [bottom])]):
        y = Q.combine(S[:, i]).to(device)
        if not products:
            if rank < len(order):
                out.vectors.append(y)
            else:
                out.bottom_vector = y
            continue
        hy = operator.matvec(y).to(torch.float64)
        res = float((hy - float(theta[i]) * y).norm() / y.norm())
        if rank == 0 and eps > 1e-12:
            hy3 = operator.matvec(3.0 * y).to(torch.float64) / 3.0
            out.level = max(out.level, float((hy3 - hy).norm()))
        if rank < len(order):
            out.measured.append(res)
            if keep:
                out.vectors.append(y)
        else:
            out.bottom = res
            out.bottom_vector = y if keep else None
    return out


def _errors(check: _Check, bounds: Tensor, order: list[int]) -> list[float]:
    """error estimate = max(residual bound, measured residual + rounding level)."""
    return [
        max(float(bounds[i]), r + check.level) for i, r in zip(order, check.measured, strict=True)
    ]


def _meets(check: _Check, bounds: Tensor, theta: Tensor, targets: Any, k: int) -> bool:
    """Whether the measured error estimates meet the contract: within the target or within
    ROUNDING_MULTIPLE × the rounding level, for every wanted eigenvalue."""
    n = int(theta.numel())
    order = list(range(n - 1, n - 1 - len(check.measured), -1))
    top_target, bottom_target = targets(theta)
    allowed = [max(float(t), ROUNDING_MULTIPLE * check.level) for t in top_target.flip(0)]
    ok = all(e <= a for e, a in zip(_errors(check, bounds, order), allowed, strict=True))
    if check.bottom is not None:
        error = max(float(bounds[0]), check.bottom + check.level)
        ok = ok and error <= max(bottom_target, ROUNDING_MULTIPLE * check.level)
    return ok and len(check.measured) == k


def _budget_message(result: LanczosResult, max_iter: int, k: int) -> str | None:
    """The NotConvergedWarning's text when a budget stopped the run, else None."""
    stopped = [v for v in [result.limited_by, result.most_negative_limited_by] if v]
    budget = next((v for v in stopped if not is_converged(v)), None)
    if budget is None:
        return None
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
    which = []
    if not is_converged(result.limited_by):
        which.append(
            f"the top {'eigenvalue' if k == 1 else f'{k} eigenvalues'} likely "
            f"underestimate{'s' if k == 1 else ''} the true one{'' if k == 1 else 's'}, by up "
            f"to {'its' if k == 1 else 'their'} error estimate{'' if k == 1 else 's'} "
            f"(worst {worst_rel:.3g} relative)"
        )
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


def lanczos_tridiagonal(
    operator: LinearOperator,
    steps: int,
    v0: Tensor,
    ctx: MeasureContext | None = None,
    progress_offset: int = 0,
    max_basis: int | None = None,
    stats: dict[str, Any] | None = None,
) -> tuple[Tensor, Tensor]:
    """`steps` Lanczos steps from unit v0, for quadrature.

    Returns the tridiagonal's diagonal α (n) and off-diagonal β (n−1); n < steps when the
    Krylov space became invariant (β ≈ 0), in which case the quadrature is exact. A `stats`
    dict receives "basis_peak", the most basis columns allocated at once.

    Up to `max_basis` steps (default: all) every vector is reorthogonalised against all
    earlier ones. Past it the oldest vectors are forgotten a chunk at a time (a sliding
    window of at least max_basis − 16 recent vectors): global orthogonality is then lost as
    in plain Lanczos, and converged extreme eigenvalues reappear as ghost copies among the
    nodes. Quadrature does not suffer: finite-precision Lanczos is exact Lanczos on a matrix
    whose eigenvalues lie in tiny clusters around H's, with the start vector's weight of
    each eigenvalue shared within its cluster (Greenbaum 1989; Chen, Trogdon & Ubaru 2021),
    so the ghosts split their eigenvalue's weight and vᵀf(H)v is still approximated as well.
    """
    dim = operator.dim
    steps = min(steps, dim)
    window = steps if max_basis is None else min(steps, max_basis)
    q = v0.double() / v0.double().norm()
    Q = Basis(dim, q.device, capacity=window)
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    q_prev, beta_prev = q, 0.0
    for j in range(steps):
        if len(Q) == window:
            Q.drop_oldest_chunk()
            if len(Q) == window:  # one chunk only: the window is the recurrence's two vectors
                Q.truncate(0)
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
    if stats is not None:  # what the basis held, for tests and benchmarks
        stats["basis_peak"] = max(stats.get("basis_peak", 0), Q.peak_columns)
    return torch.tensor(alphas, dtype=torch.float64), torch.tensor(betas, dtype=torch.float64)

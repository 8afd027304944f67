"""Spectral density by stochastic Lanczos quadrature (Ghorbani, Krishnan, Xiao 2019).

For a unit start vector v, m Lanczos steps give T_m = U diag(θ) Uᵀ; the Gauss quadrature
vᵀ f(H) v ≈ Σ_i w_i f(θ_i) with w_i = U[0, i]² (nodes θ, weights summing to 1). Averaging
over random v estimates (1/dim)·tr f(H), i.e. the spectral measure. The density on a grid
is Σ_i w_i·N(x; θ_i, σ²), averaged over runs and normalised to integrate to 1; σ is the
bandwidth times the range of the nodes. The weighted mean of the nodes estimates tr(H)/dim.

Near-zero share: the spectral mass with |λ| ≤ zero_threshold·λscale (λscale = the largest
|node|; Granziol's rank bound predicts most of it); effective_rank = (1 − share)·dim.

Counting the weights of the nodes inside [−t, t] is biased: a node near ±t carries the weight
of eigenvalues on both sides of it, and the bulk of small nonzero eigenvalues of a network
Hessian sits right there (SLQ gave 483-522 against an exact 565). The Markov–Stieltjes
inequalities bound the distribution function of each run's measure μ_v (the measure whose
Gauss quadrature the run computed) between the node weights: for nodes x₁ < … < x_m,
Σ_{i<j} w_i ≤ F(x_j − 0) ≤ F(x_j) ≤ Σ_{i≤j} w_i. So each run gives a guaranteed bracket
[L_v, U_v] on μ_v([−t, t]), wide by the weights of the nodes next to ±t. The spectral share
is E_v μ_v([−t, t]), so the interval averages the brackets over runs and widens them by a
95% t-quantile times the runs' standard error (the probe-to-probe spread); the reported value
is the centre of that bracket, whose error is at most half its width whatever the spectrum
does near ±t. More steps (more nodes near ±t) narrow it; more runs narrow the probe part.
Past `max_basis` steps the reorthogonalisation window slides (see lanczos_tridiagonal): the
nodes and weights stay a valid quadrature in practice, but the bracket is then no longer a
theorem about μ_v, only about the quadrature.

Rounding: the products are computed in the model's dtype, so the nodes are eigenvalues of the
computed operator H̃, each within about ‖H̃ − H‖ of a true one (Weyl), and an eigenvalue
within that of ±t may fall on either side of the threshold. With rounding level
r = DENSITY_ROUNDING_FACTOR·eps·λscale (eps of the products' dtype; Lanczos saw eigenvalue
errors of 0.01-8·eps·‖H‖ on float32 test models, tests/engine/test_error_estimates.py), the
lower end of the share interval uses each run's bracket at t − r and the upper end its bracket
at t + r, so the rank interval holds whatever rounding did to the eigenvalues near ±t
(`effective_rank_rounding` is the width this adds, in ranks; `rounding_level` is r).
An exact run's bracket was a point before: it now spans the mass within r of ±t.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tasks.engine.lanczos import lanczos_tridiagonal
from tasks.engine.linear_operator import LinearOperator, as_operator
from tasks.engine.precision import operator_dtype, unit_roundoff
from tasks.engine.trace.common import t_quantile

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext

#: rounding level of the nodes = DENSITY_ROUNDING_FACTOR · eps · λscale (twice the largest
#: eigenvalue error, in units of eps·‖H‖, that Lanczos showed on float32 test models)
DENSITY_ROUNDING_FACTOR = 16.0

#: float64 vectors of the model's size the quadrature's plain Lanczos holds besides its
#: window: q, its predecessor, the product and the recurrence's temporaries
SLQ_WORKING_FLOAT64 = 6


@dataclass
class DensityEstimate:
    grid: list[float]
    density: list[float]
    nodes: list[list[float]]
    weights: list[list[float]]
    near_zero_share: float
    effective_rank: float
    lambda_max: float
    lambda_min: float
    sigma: float
    hvps: int
    seconds: float
    effective_rank_ci95: tuple[float, float] = (0.0, 0.0)
    effective_rank_naive: float = 0.0  # (1 − weight of the nodes inside [−t, t])·dim
    max_basis: int | None = None
    basis_peak: int = 0  # most Lanczos vectors held at once
    # the basis' peak bytes and the working vectors' (tasks.engine.memory), per parameter
    bytes_per_parameter: float = 0.0
    rounding_level: float = 0.0  # r: how far rounding may move an eigenvalue (absolute)
    effective_rank_rounding: float = 0.0  # width the rounding adds to the rank interval


def slq(
    operator: LinearOperator | Tensor,
    runs: int = 5,
    steps: int = 80,
    grid_points: int = 400,
    bandwidth: float = 0.01,
    zero_threshold: float = 1e-3,
    seed: int = 0,
    ctx: MeasureContext | None = None,
    max_basis: int | None = None,
) -> DensityEstimate:
    """Stochastic Lanczos quadrature: `runs` runs of `steps` Lanczos steps, each holding at
    most `max_basis` vectors (default: all `steps`, full reorthogonalisation)."""
    operator = as_operator(operator)
    start, before = time.perf_counter(), operator.hvps
    stats: dict[str, Any] = {}
    all_nodes, all_weights, exact = _quadratures(operator, runs, steps, seed, ctx, max_basis, stats)
    nodes = torch.cat(all_nodes)
    weights = torch.cat(all_weights) / runs
    lmax, lmin = float(nodes.max()), float(nodes.min())
    grid, density, sigma = _smoothed(nodes, weights, bandwidth, grid_points)
    scale = max(abs(lmax), abs(lmin))
    t = zero_threshold * scale
    share = float(weights[nodes.abs() <= t].sum())
    level = DENSITY_ROUNDING_FACTOR * unit_roundoff(operator_dtype(operator)) * scale

    def brackets_at(threshold: float) -> list[tuple[float, float]]:
        return [
            _share_bracket(x, w, threshold, exact=e)
            for x, w, e in zip(all_nodes, all_weights, exact, strict=True)
        ]

    brackets = brackets_at(t)
    mid, plain = _rank_interval([b[0] for b in brackets], [b[1] for b in brackets], operator.dim)
    inner, outer = brackets_at(max(t - level, 0.0)), brackets_at(t + level)
    low, high = [b[0] for b in inner], [b[1] for b in outer]
    _, ci = _rank_interval(low, high, operator.dim, also=[b for pair in brackets for b in pair])
    return DensityEstimate(
        grid=grid.tolist(),
        density=density.tolist(),
        nodes=[t.tolist() for t in all_nodes],
        weights=[w.tolist() for w in all_weights],
        near_zero_share=1 - mid / operator.dim,
        effective_rank=mid,
        lambda_max=lmax,
        lambda_min=lmin,
        sigma=sigma,
        hvps=operator.hvps - before,
        seconds=time.perf_counter() - start,
        effective_rank_ci95=ci,
        effective_rank_naive=(1 - share) * operator.dim,
        max_basis=max_basis,
        basis_peak=stats.get("basis_peak", 0),
        bytes_per_parameter=stats.get("basis_bytes_peak", 0) / max(operator.dim, 1)
        + SLQ_WORKING_FLOAT64 * 8,
        rounding_level=level,
        effective_rank_rounding=(ci[1] - ci[0]) - (plain[1] - plain[0]),
    )


def _quadratures(
    operator: LinearOperator,
    runs: int,
    steps: int,
    seed: int,
    ctx: MeasureContext | None,
    max_basis: int | None,
    stats: dict[str, Any],
) -> tuple[list[Tensor], list[Tensor], list[bool]]:
    """Each run's Gauss quadrature: the nodes (its tridiagonal's eigenvalues), the weights
    (their eigenvectors' first components squared) and whether it is the probe's measure
    itself."""
    gen = torch.Generator().manual_seed(seed)
    all_nodes, all_weights = [], []
    exact: list[bool] = []
    for run in range(runs):
        v0 = torch.randn(operator.dim, generator=gen, dtype=torch.float64).to(operator.device)
        alpha, beta = lanczos_tridiagonal(
            operator,
            steps,
            v0 / v0.norm(),
            ctx=ctx,
            progress_offset=run * steps,
            max_basis=max_basis,
            stats=stats,
        )
        T = torch.diag(alpha)
        if beta.numel():
            T += torch.diag(beta, 1) + torch.diag(beta, -1)
        theta, U = torch.linalg.eigh(T)
        # a run that stopped early found an invariant subspace (or spans the space): its
        # quadrature is the probe's measure itself, with no bracket to allow for
        exact.append(alpha.numel() < min(steps, operator.dim) or alpha.numel() == operator.dim)
        all_nodes.append(theta)
        all_weights.append(U[0, :] ** 2)
    return all_nodes, all_weights, exact


def _smoothed(
    nodes: Tensor, weights: Tensor, bandwidth: float, grid_points: int
) -> tuple[Tensor, Tensor, float]:
    """The nodes' weights spread by a Gaussian of width `bandwidth` × the spectrum's spread,
    on a grid, normalised to unit area: (grid, density, sigma)."""
    lmax, lmin = float(nodes.max()), float(nodes.min())
    spread = lmax - lmin
    sigma = bandwidth * (spread if spread > 0 else max(abs(lmax), 1.0))
    grid = torch.linspace(lmin - 5 * sigma, lmax + 5 * sigma, grid_points, dtype=torch.float64)
    z = (grid[:, None] - nodes[None, :].cpu()) / sigma
    density = (torch.exp(-0.5 * z**2) * weights.cpu()[None, :]).sum(1) / (sigma * 2.5066282746)
    return grid, density / torch.trapezoid(density, grid), sigma


def _share_bracket(
    nodes: Tensor, weights: Tensor, t: float, exact: bool = False
) -> tuple[float, float]:
    """Markov–Stieltjes bounds on μ([−t, t]) for the measure whose Gauss quadrature has these
    (ascending) nodes and weights: F(t) and F(−t − 0) are each known to within the weights of
    the nodes next to them. `exact`: the nodes and weights are the measure itself."""
    x, w = nodes.cpu(), weights.cpu()
    if exact:
        share = float(w[x.abs() <= t].sum())
        return share, share
    m = x.numel()

    def cdf_bounds(count: int) -> tuple[float, float]:
        # count nodes lie at or left of the point: F there is between Σ_{i<count} w minus the
        # last of them and plus the next one
        inside = float(w[:count].sum())
        lo = inside - (float(w[count - 1]) if count > 0 else 0.0)
        hi = inside + (float(w[count]) if count < m else 0.0)
        return max(lo, 0.0), min(hi, 1.0)

    right_lo, right_hi = cdf_bounds(int((x <= t).sum()))  # F(t)
    left_lo, left_hi = cdf_bounds(int((x < -t).sum()))  # F(−t − 0)
    return max(right_lo - left_hi, 0.0), min(right_hi - left_lo, 1.0)


def _rank_interval(
    low: list[float], high: list[float], dim: int, also: list[float] | None = None
) -> tuple[float, tuple[float, float]]:
    """Centre and 95% interval of the effective rank from the runs' share brackets. `also`:
    the brackets at the threshold itself, flattened (lows and highs in turn), when `low` and
    `high` are the brackets moved out by the rounding: their spread counts too, so the
    interval contains the unrounded one."""
    lo = torch.tensor(low, dtype=torch.float64)
    hi = torch.tensor(high, dtype=torch.float64)
    n = lo.numel()
    half = 0.0
    spread = 0.0
    if n >= 2:
        half = t_quantile(n)
        spread = max(float(lo.std()), float(hi.std())) / math.sqrt(n)
        if also is not None:
            plain = torch.tensor(also, dtype=torch.float64)
            spread = max(spread, float(plain[0::2].std()) / math.sqrt(n))
            spread = max(spread, float(plain[1::2].std()) / math.sqrt(n))
    share_lo = max(float(lo.mean()) - half * spread, 0.0)
    share_hi = min(float(hi.mean()) + half * spread, 1.0)
    centre = 0.5 * (float(lo.mean()) + float(hi.mean()))
    return (1 - centre) * dim, ((1 - share_hi) * dim, (1 - share_lo) * dim)

"""A computable PAC-Bayes bound on the test error (Dziugaite & Roy 2017), and kl⁻¹.

Posterior Q_σ = N(w, σ²I) and prior P_σ = N(w₀, σ²I) over the selected weights (w₀ the
weights at initialisation, or 0). Then

    KL(Q_σ ‖ P_σ) = ‖w − w₀‖² / (2σ²).

PAC-Bayes-kl (Seeger 2002, Maurer 2004): with probability ≥ 1 − δ over the m training examples,
for every Q,

    kl(ê_S(Q) ‖ e_D(Q)) ≤ (KL(Q ‖ P) + ln(2√m / δ)) / m,

so e_D(Q) ≤ kl⁻¹(ê_S(Q) | (KL + ln(2√m/δ))/m), kl⁻¹(q | c) = max { p ∈ [q, 1] : kl(q‖p) ≤ c }
for Bernoulli kl(q‖p) = q ln(q/p) + (1 − q) ln((1 − q)/(1 − p)).

ê_S(Q), the train 0-1 error of the stochastic classifier, is not computable exactly; it is
estimated from n weight draws w + σz (each evaluated on all m examples) and bounded above by the
sample-convergence bound (Langford & Caruana 2001): with probability ≥ 1 − δ′,
ê_S(Q) ≤ kl⁻¹(ê_n | ln(2/δ′) / n). kl⁻¹ is monotone in q, so the upper bound may be plugged in.

σ is chosen from a fixed grid of K values after looking at the data, so both statements are
made for every grid point at once by a union bound: δ/K and δ′/K each. The reported bound,
the smallest over the grid, then holds with probability ≥ 1 − δ − δ′ for the σ it names.

It bounds the test error of the Gaussian posterior Q, not of the network w itself, and it is
an upper bound, not a prediction of the error.

Jiang et al. 2020's measures pacbayes.orig and pacbayes.init are something else (`jiang_term`):

    √((‖w − c‖²/(4σ²) + ln(m/σ) + 10) / m),   c = 0 (orig) or w₀ (init),

evaluated at *their* σ — the largest isotropic noise whose expected train-accuracy drop is 0.1,
the same σ as pacbayes.flatness (found by `perturbation.flatness_search`) — not at the σ that
minimises the bound above (which is chosen for the bound, not for the measure). See the
`pacbayes_orig` measure.

The pacbayes_* measures run from here: `flatness_measure`, `orig_measure` and `bound_measure`
compute all four, so each measure module is one call. Their parameters are declared in
tasks.contract.measures (`FlatnessParams`, the search for σ* that pacbayes_flatness,
pacbayes_mag_flatness and pacbayes_orig share, in tasks.contract.measures.pacbayes).

The searches follow the convergence contract (tasks.engine.convergence): `converged` is true
when the bisection found the σ whose drop is the target (limited_by "tolerance": resolved to
σ_max/2^depth); a σ capped at sigma_max is not converged (limited_by "search range") and a
NotConvergedWarning says to raise sigma_max. pacbayes_bound is not a search: its converged is
None and it has no limited_by.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tasks.contract.measures.pacbayes import FlatnessParams
from tasks.contract.measures.pacbayes_bound import Params as BoundParams
from tasks.engine.convergence import SEARCH_RANGE, TOLERANCE, NotConvergedWarning
from tasks.engine.measures.base import attributes, measured
from tasks.engine.perturbation import (
    accuracy,
    flatness_search,
    isotropic_std,
    magnitude_std,
    noisy_accuracies,
    require_classification,
    subset,
)

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext
    from tasks.engine.problem import HessianProblem

KL_INV_TOL = 1e-12
LABEL = (
    "PAC-Bayes upper bound (Dziugaite & Roy 2017) on the test 0-1 error of the Gaussian "
    "posterior N(w, σ²I), holding with probability ≥ 1 − δ − δ′; a bound, not a prediction"
)


def kl_bernoulli(q: float, p: float) -> float:
    """kl(q‖p) between Bernoulli(q) and Bernoulli(p), float64, with 0·ln 0 = 0."""
    if not (0.0 <= q <= 1.0 and 0.0 <= p <= 1.0):
        raise ValueError(f"kl needs q, p in [0, 1], got q={q}, p={p}")
    out = 0.0
    if q > 0:
        out += math.inf if p == 0 else q * math.log(q / p)
    if q < 1:
        out += math.inf if p == 1 else (1 - q) * math.log((1 - q) / (1 - p))
    return out


def kl_inverse_upper(q: float, c: float, tol: float = KL_INV_TOL) -> float:
    """kl⁻¹(q | c) = max { p ∈ [q, 1] : kl(q‖p) ≤ c }, by bisection in float64.

    kl(q‖·) is 0 at q and increasing on [q, 1], so the set is an interval [q, p*]; the upper
    end of the final bracket is returned, which errs on the side of a larger (safe) bound.
    (Near p = q, kl ≈ (p − q)²/(2q(1 − q)) is lost in rounding below c ≈ 1e-16, so p* is then
    accurate to about 1e-8, again on the safe side.)"""
    if c < 0:
        raise ValueError(f"kl⁻¹ needs c ≥ 0, got {c}")
    q = min(max(q, 0.0), 1.0)
    if c == 0:
        return q
    if q >= 1.0 or kl_bernoulli(q, 1.0) <= c:
        return 1.0
    lo, hi = q, 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if kl_bernoulli(q, mid) > c:
            hi = mid
        else:
            lo = mid
    return hi


def pacbayes_kl_bound(error_upper: float, kl: float, m: int, delta: float) -> float:
    """kl⁻¹(ê | (KL + ln(2√m/δ))/m): the PAC-Bayes-kl bound on the test error."""
    return kl_inverse_upper(error_upper, (kl + math.log(2 * math.sqrt(m) / delta)) / m)


def sample_convergence_upper(error_mean: float, n: int, delta_prime: float) -> float:
    """Upper bound on the error of Q from the mean error of n draws: kl⁻¹(ê_n | ln(2/δ′)/n)."""
    return kl_inverse_upper(error_mean, math.log(2 / delta_prime) / n)


def jiang_term(distance_sq: float, sigma: float, m: int) -> float:
    """Jiang et al.'s PAC-Bayes measure √((‖w − c‖²/(4σ²) + ln(m/σ) + 10)/m) for a prior mean c
    (0: pacbayes.orig; w₀: pacbayes.init), σ their flatness σ; `distance_sq` = ‖w − c‖²."""
    if sigma <= 0 or m <= 0:
        raise ValueError(f"the PAC-Bayes term needs σ > 0 and m > 0, got σ={sigma}, m={m}")
    return math.sqrt((distance_sq / (4 * sigma * sigma) + math.log(m / sigma) + 10) / m)


def sigma_grid(sigma_min: float, sigma_max: float, size: int) -> list[float]:
    """`size` values spaced evenly in log between σ_min and σ_max (fixed before the data)."""
    if size == 1:
        return [sigma_max]
    ratio = math.log(sigma_max / sigma_min) / (size - 1)
    return [sigma_min * math.exp(i * ratio) for i in range(size)]


@dataclass
class PacBayesBound:
    bound: float
    sigma: float
    kl: float
    error_mean: float  # ê_n: mean train error over the n weight draws at the chosen σ
    error_upper: float  # its sample-convergence upper bound
    m: int
    samples: int
    delta: float
    delta_prime: float
    distance: float  # ‖w − w₀‖
    base_error: float  # train error of w itself
    grid: list[dict[str, float]] = field(default_factory=list)


def pacbayes_bound(
    problem: HessianProblem,
    w0: Tensor | None,
    sigmas: list[float],
    samples: int = 100,
    delta: float = 0.025,
    delta_prime: float = 0.01,
    seed: int = 0,
    max_examples: int | None = None,
    ctx: MeasureContext | None = None,
) -> PacBayesBound:
    """The bound at each σ of the grid (union bound over the grid) and the smallest one."""
    batches = subset(problem, max_examples)
    m = sum(b.size for b in batches)
    w = problem.parameter_vector().double()
    w0 = torch.zeros_like(w) if w0 is None else w0.double()
    dist_sq = float((w - w0).pow(2).sum())
    k = len(sigmas)
    ones = torch.ones(problem.dim, dtype=torch.float64, device=problem.device)
    rows: list[dict[str, float]] = []
    for i, sigma in enumerate(sigmas):
        errors = [1 - a for a in noisy_accuracies(problem, batches, sigma * ones, samples, seed)]
        e_mean = sum(errors) / samples
        e_upper = sample_convergence_upper(e_mean, samples, delta_prime / k)
        kl = dist_sq / (2 * sigma * sigma)
        rows.append(
            {
                "sigma": sigma,
                "kl": kl,
                "error_mean": e_mean,
                "error_upper": e_upper,
                "bound": pacbayes_kl_bound(e_upper, kl, m, delta / k),
            }
        )
        if ctx is not None:
            ctx.step(i + 1, min(r["bound"] for r in rows), sigma=sigma)
    best = min(rows, key=lambda r: r["bound"])
    return PacBayesBound(
        bound=best["bound"],
        sigma=best["sigma"],
        kl=best["kl"],
        error_mean=best["error_mean"],
        error_upper=best["error_upper"],
        m=m,
        samples=samples,
        delta=delta,
        delta_prime=delta_prime,
        distance=math.sqrt(dist_sq),
        base_error=1 - accuracy(problem, batches),
        grid=rows,
    )


# The pacbayes_* measures' run functions.

# the noise, its σ and σ's diagnostics key: isotropic (False) or relative to each weight (True)
NOISE_NAMES = {False: ("noise", "σ", "sigma"), True: ("relative noise", "σ′", "sigma_prime")}


def flatness_measure(
    ctx: MeasureContext,
    params: FlatnessParams,
    measure: str,
    eps: float | None = None,
    capped: str = "",
) -> dict[str, Any]:
    """pacbayes_flatness: value 1/σ*², σ* the largest isotropic noise whose expected accuracy
    drop is the target; with `eps`, pacbayes_mag_flatness: the same for the noise
    √(σ′²wᵢ² + ε²) relative to each weight (1/σ′*²). Warns when even σ_max never cost the
    target drop (`capped` says what the capped σ means for the measure)."""
    problem = ctx.problem
    require_classification(problem, measure)
    std_of = isotropic_std(problem) if eps is None else magnitude_std(problem, eps)
    search = flatness_search(problem, std_of, **params.options("eps"), ctx=ctx)
    noise, symbol, key = NOISE_NAMES[eps is not None]
    if not search.reached:
        warnings.warn(
            f"{measure} did NOT converge: its {SEARCH_RANGE} stopped it: {noise} up to "
            f"sigma_max={params.sigma_max} never cost {params.target_drop} accuracy, so "
            f"{symbol} is capped at sigma_max{capped}; raise sigma_max",
            NotConvergedWarning,
            stacklevel=3,
        )
    diagnostics = {
        key: search.sigma,
        "accuracy_at_sigma": search.accuracy,
        "base_accuracy": search.base_accuracy,
        "drop_at_sigma": search.drop,
        **attributes(params, "target_drop", "sigma_max"),
        "reached_target": search.reached,
        # bisection to `depth` steps is the resolution asked for; a σ capped at sigma_max
        # is the edge of the search range, not a measurement
        "limited_by": TOLERANCE if search.reached else SEARCH_RANGE,
        "iterations": search.iterations,
        "samples": params.samples,
        "examples": search.examples,
        "forward_passes": (search.iterations + 1) * params.samples + 1,
        "history": search.history,
    }
    if eps is not None:
        diagnostics["eps"] = eps
    value = 1.0 / (search.sigma * search.sigma) if search.sigma > 0 else math.inf
    return measured(value, diagnostics, converged=search.reached)


def orig_measure(ctx: MeasureContext, params: FlatnessParams, measure: str) -> dict[str, Any]:
    """pacbayes_orig at the flatness σ, and pacbayes_init when an initial model is given."""
    flat = flatness_measure(ctx, params, measure, capped=f" and {measure} is evaluated there")
    search = flat["diagnostics"]
    m, sigma = search["examples"], search["sigma"]
    w = ctx.problem.parameter_vector().double()
    norm_sq = float(w.pow(2).sum())
    diagnostics: dict[str, Any] = {
        "kind": "measure",
        "limited_by": search["limited_by"],
        "sigma": sigma,
        "m": m,
        "weight_norm_sq": norm_sq,
        "pacbayes_flatness": flat["value"],
        "search": search,
    }
    w0 = ctx.initial_vector()
    if w0 is not None:
        dist_sq = float((w - w0.double()).pow(2).sum())
        diagnostics["distance_from_init_sq"] = dist_sq
        diagnostics["pacbayes_init"] = jiang_term(dist_sq, sigma, m)
    return measured(jiang_term(norm_sq, sigma, m), diagnostics, converged=flat["converged"])


def bound_measure(ctx: MeasureContext, params: BoundParams, measure: str) -> dict[str, Any]:
    """pacbayes_bound: the smallest bound over the σ grid, and what it was computed from."""
    problem = ctx.problem
    require_classification(problem, measure)
    w0 = ctx.initial_vector()
    if w0 is None:
        warnings.warn(
            f"{measure}: no initial model (w₀) given, so the prior is centred at 0 and "
            "KL = ‖w‖²/(2σ²); give initial_model for the bound Dziugaite & Roy describe "
            "(usually much tighter)",
            stacklevel=3,
        )
    total = sum(p.numel() for p in problem.module.parameters() if p.requires_grad)
    if problem.dim < total:
        warnings.warn(
            f"{measure} over a subset of the parameters: the others are held at their "
            "trained values, which the bound assumes were not fitted to this data",
            stacklevel=3,
        )
    grid = sigma_grid(params.sigma_min, params.sigma_max, params.grid_size)
    options = params.options("sigma_min", "sigma_max", "grid_size")
    res = pacbayes_bound(problem, w0, grid, **options, ctx=ctx)
    diagnostics = {
        "kind": "bound",
        "label": LABEL,
        **attributes(res, "delta", "delta_prime", "sigma", "kl", "error_mean", "error_upper"),
        **attributes(res, "base_error", "m", "samples"),
        "distance_from_prior": res.distance,
        "prior_mean": "initial_model" if w0 is not None else "zero",
        "grid": res.grid,
    }
    return measured(res.bound, diagnostics)

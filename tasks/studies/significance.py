"""Is a measure's ranking of the gaps more than chance, and more than a baseline's?

All tests here resample or permute whole models, never compute an asymptotic formula, so they
hold at the small sizes studies have:

- **Permutation p-values** for Kendall τ-b and granulated Ψ against "the measure tells
  nothing about the gap": the gaps are permuted over the models and the statistic recomputed.
  Two-sided: p = P(|T_perm| ≥ |T_obs|). Up to EXACT_MAX_N models every permutation is
  enumerated (p is exact: at n = 4, τ = 1 gives 2/24 = 1/12); beyond, `permutations` random
  permutations from a seeded generator give p = (b + 1)/(m + 1), b the number of permuted
  statistics at least as extreme (a valid p-value for any m, Phipson & Smyth 2010). The
  same permutations of the gaps serve every feature, so one pass scores them all.
- **Bootstrap intervals** for τ: the percentile interval over resamples of the models (of
  whole groups of models when the study declares seed groups or has duplicates).
- **Measure against the best baseline**: a paired bootstrap of the difference of τ. The best
  baseline b is chosen once, by |τ| on all the models (choosing it on the same data makes
  it look stronger, never weaker, so the test errs on the side of the baseline); each
  resample draws the same models for both, and the one-sided p-value that the measure ranks
  the gaps better is p = (1 + #{D* ≤ 0}) / (B + 1), D* = s_m·τ*_m − s_b·τ*_b with s the
  sign of each τ on all the models (the direction each one ranks in). Taking the best
  baseline again inside every resample instead compares a measure with the maximum of
  several noisy statistics and costs most of the test's power.
- **A predictor against the mean gap**: a one-sided paired sign-flip test on the per-group
  differences of absolute leave-one-out errors, exact up to SIGNFLIP_EXACT_MAX groups.
- **Holm's step-down correction** across the study's measures, so that looking at many
  measures and keeping the best does not manufacture a discovery.

A resample with repeats is handled with pair weights: model i drawn wᵢ times contributes
wᵢwⱼ copies of the pair (i, j), and a model's copies with each other are ties in both
coordinates (they add nothing to τ-b's numerator or to its untied counts).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tasks.studies.ranking import _canon, hyperparameter_names

ALPHA = 0.05
EXACT_MAX_N = 8
PERMUTATIONS = 1999
BOOTSTRAP = 999
SEED = 0
# Work budget (permutations × pairs) above which fewer random permutations are drawn.
_PAIR_BUDGET = 6e7
_MIN_PERMUTATIONS = 499
_CHUNK = 2_000_000  # elements of a (permutations × pairs) block held at once


@dataclass
class PermutationTest:
    p_tau: list[float | None]  # one per feature
    p_psi: list[float | None]
    method: str  # "exact" or "monte_carlo"
    permutations: int


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.triu_indices(n, k=1)
    return a, b


def _signs(v: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sign(v[..., a] − v[..., b]) as float32."""
    return np.sign(v[..., a] - v[..., b]).astype(np.float32)


def _tau_rows(sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """τ-b of each row of sy (k, P) against each column of sx (P, F): (k, F); NaN where the
    gaps are all tied (τ undefined), 0 where the feature is constant and the gaps are not."""
    num = sy @ sx
    uy = np.count_nonzero(sy, axis=1).astype(float)[:, None]
    ux = np.count_nonzero(sx, axis=0).astype(float)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = num / np.sqrt(uy * ux)
    tau = np.where(ux == 0, 0.0, tau)
    return np.where(uy == 0, np.nan, tau)


def permutation_matrix(n: int, permutations: int = PERMUTATIONS, seed: int = SEED) -> np.ndarray:
    """Every permutation of range(n) (n ≤ EXACT_MAX_N), else `permutations` random ones."""
    if n <= EXACT_MAX_N:
        return np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(np.arange(n), (permutations, 1)), axis=1)


def _draws(n: int) -> int:
    pairs = n * (n - 1) / 2
    return int(max(_MIN_PERMUTATIONS, min(PERMUTATIONS, _PAIR_BUDGET / max(pairs, 1.0))))


def _groups(hps: Sequence[Mapping]) -> list[list[np.ndarray]]:
    """For each hyperparameter that varies: the index arrays of the groups (≥ 2 models) that
    agree on every other hyperparameter (ranking.granulated_kendall's groups)."""
    names = hyperparameter_names(hps)
    out = []
    for name in names:
        if len({_canon(h.get(name)) for h in hps}) < 2:
            continue
        others = [o for o in names if o != name]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for idx, h in enumerate(hps):
            groups[tuple(_canon(h.get(o)) for o in others)].append(idx)
        out.append([np.array(g) for g in groups.values() if len(g) >= 2])
    return out


def _psi_rows(yp: np.ndarray, x: np.ndarray, hp_groups: list[list[np.ndarray]]) -> np.ndarray:
    """Ψ of each row of the permuted gaps yp (k, n) against each feature column of x (n, F),
    as ranking.granulated_kendall computes it: (k, F), NaN where Ψ is undefined."""
    k, f = yp.shape[0], x.shape[1]
    psi_sum = np.zeros((k, f))
    psi_count = np.zeros((k, f))
    for groups in hp_groups:
        tau_sum = np.zeros((k, f))
        tau_count = np.zeros((k, f))
        for idx in groups:
            a, b = _pairs(idx.size)
            sx = _signs(x[idx].T, a, b).T  # (P, F)
            tau = _tau_rows(_signs(yp[:, idx], a, b), sx)
            ok = np.isfinite(tau)
            tau_sum += np.where(ok, tau, 0.0)
            tau_count += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            psi_i = tau_sum / tau_count
        ok = tau_count > 0
        psi_sum += np.where(ok, psi_i, 0.0)
        psi_count += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(psi_count > 0, psi_sum / psi_count, np.nan)


def permutation_test(
    x: np.ndarray,
    y: np.ndarray,
    hps: Sequence[Mapping],
    tau_obs: Sequence[float | None],
    psi_obs: Sequence[float | None],
    seed: int = SEED,
) -> PermutationTest:
    """Two-sided permutation p-values of τ and Ψ for every column of x (n, F, all finite)
    against the gaps y (n,), with the observed statistics given (module docstring)."""
    n, f = x.shape
    exact = n <= EXACT_MAX_N
    m = _draws(n)
    perms = permutation_matrix(n, m, seed)
    a, b = _pairs(n)
    sx = _signs(x.T, a, b).T
    hp_groups = _groups(hps)
    t_obs = np.array([np.nan if t is None else abs(t) for t in tau_obs])
    s_obs = np.array([np.nan if s is None else abs(s) for s in psi_obs])
    tol = 1e-9
    ge_tau = np.zeros(f)
    ge_psi = np.zeros(f)
    chunk = max(1, int(_CHUNK // max(a.size, 1)))
    for start in range(0, perms.shape[0], chunk):
        yp = y[perms[start : start + chunk]]
        tau = _tau_rows(_signs(yp, a, b), sx)
        ge_tau += np.sum(np.nan_to_num(np.abs(tau), nan=0.0) >= t_obs - tol, axis=0)
        if hp_groups:
            psi = _psi_rows(yp, x, hp_groups)
            ge_psi += np.sum(np.nan_to_num(np.abs(psi), nan=0.0) >= s_obs - tol, axis=0)
    total = perms.shape[0]

    def p(ge: np.ndarray, obs: np.ndarray) -> list[float | None]:
        out: list[float | None] = []
        for g, o in zip(ge, obs, strict=True):
            if not math.isfinite(o):
                out.append(None)
            else:
                out.append(float(g / total) if exact else float((g + 1) / (total + 1)))
        return out

    return PermutationTest(
        p_tau=p(ge_tau, t_obs),
        p_psi=p(ge_psi, s_obs) if hp_groups else [None] * f,
        method="exact" if exact else "monte_carlo",
        permutations=total,
    )


def bootstrap_weights(groups: np.ndarray, draws: int = BOOTSTRAP, seed: int = SEED) -> np.ndarray:
    """(draws, n) counts: how often each model enters a resample of the groups (drawn with
    replacement, as many as there are groups; a model counts as often as its group)."""
    labels, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed + 1)
    counts = rng.multinomial(labels.size, np.full(labels.size, 1.0 / labels.size), size=draws)
    return counts[:, inverse].astype(float)


def bootstrap_taus(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """τ-b of each feature column of x (n, F; NaN = missing) against y in each weighted
    resample: (draws, F), NaN where undefined."""
    n, f = x.shape
    a, b = _pairs(n)
    present = np.isfinite(x)
    valid = (present[a] & present[b]).astype(float)  # (P, F)
    sx = np.where(valid > 0, np.sign(np.nan_to_num(x[a]) - np.nan_to_num(x[b])), 0.0)
    sy = np.sign(y[a] - y[b])[:, None]  # (P, 1)
    out = np.empty((weights.shape[0], f))
    chunk = max(1, int(_CHUNK // max(a.size, 1)))
    for start in range(0, weights.shape[0], chunk):
        w = weights[start : start + chunk]
        w2 = w[:, a] * w[:, b]  # (k, P)
        num = w2 @ (sx * sy)
        ux = w2 @ np.abs(sx)
        uy = w2 @ (np.abs(sy) * valid)
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = num / np.sqrt(ux * uy)
        tau = np.where((ux == 0) & (uy > 0), 0.0, tau)
        out[start : start + chunk] = np.where(uy == 0, np.nan, tau)
    return out


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> list[float] | None:
    s = samples[np.isfinite(samples)]
    if s.size < 10:
        return None
    lo, hi = np.quantile(s, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def best_baseline(taus: Sequence[float | None]) -> int | None:
    """Index of the baseline with the largest |τ| on all the models (None if none has one)."""
    ranked = [(abs(t), -i) for i, t in enumerate(taus) if t is not None and math.isfinite(t)]
    return -max(ranked)[1] if ranked else None


def beats_baseline_p(
    measure: np.ndarray, baseline: np.ndarray, tau_measure: float, tau_baseline: float
) -> float:
    """One-sided paired bootstrap p-value that the measure ranks the gaps better than the
    baseline: measure, baseline (draws,) are their τ in the same resamples, tau_measure and
    tau_baseline their τ on all the models (whose signs give each one's direction).
    D* = s_m·τ*_m − s_b·τ*_b; p = (1 + #{D* ≤ 0}) / (B + 1). A resample where either τ is
    undefined counts against the measure."""
    sm = 1.0 if tau_measure >= 0 else -1.0
    sb = 1.0 if tau_baseline >= 0 else -1.0
    d = sm * measure - sb * baseline
    against = np.count_nonzero(~np.isfinite(d) | (d <= 0))
    return float((1 + against) / (d.size + 1))


SIGNFLIP_EXACT_MAX = 14
SIGNFLIPS = 1999


def paired_improvement_p(
    rival: np.ndarray, mine: np.ndarray, groups: np.ndarray, seed: int = SEED
) -> float:
    """One-sided p-value that my absolute leave-one-out errors are smaller than a rival's
    on the same models: a sign-flip (paired randomisation) test of Σ (|rival| − |mine|) over
    the groups left out together, each group's total flipped as a whole. Exact over all 2^g
    flips up to SIGNFLIP_EXACT_MAX groups, else SIGNFLIPS seeded random flips,
    p = (b + 1)/(m + 1)."""
    d = np.abs(rival) - np.abs(mine)
    _, inverse = np.unique(groups, return_inverse=True)
    totals = np.bincount(inverse, weights=d)
    g = totals.size
    observed = float(totals.sum())
    tol = 1e-12 * max(1.0, float(np.abs(totals).sum()))
    if g <= SIGNFLIP_EXACT_MAX:
        signs = 1.0 - 2.0 * ((np.arange(2**g)[:, None] >> np.arange(g)) & 1)
        return float(np.mean(signs @ totals >= observed - tol))
    rng = np.random.default_rng(seed + 2)
    signs = rng.choice([-1.0, 1.0], size=(SIGNFLIPS, g))
    b = int(np.count_nonzero(signs @ totals >= observed - tol))
    return float((b + 1) / (SIGNFLIPS + 1))


def holm(p: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and does not count in the family):
    the i-th smallest becomes maxⱼ≤ᵢ min(1, (k − j + 1) p₍ⱼ₎)."""
    idx = [i for i, v in enumerate(p) if v is not None]
    k = len(idx)
    order = sorted(idx, key=lambda i: p[i])  # type: ignore[arg-type, return-value]
    out: list[float | None] = [None] * len(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * float(p[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


def paired_margin(rival: np.ndarray, mine: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """How much smaller my absolute LOO residuals are than a rival's, on average over the
    models, and the standard error of that mean difference (over groups of models, the unit
    that was left out together): (MAE_rival − MAE_mine, SE)."""
    d = np.abs(rival) - np.abs(mine)
    labels, inverse = np.unique(groups, return_inverse=True)
    g = labels.size
    per_group = np.bincount(inverse, weights=d) / np.bincount(inverse)
    sizes = np.bincount(inverse)
    diff = float(np.mean(d))
    if g < 2:
        return diff, math.inf
    # a group mean's contribution to the overall mean is weighted by its size
    contrib = sizes * (per_group - diff) / d.size
    se = float(math.sqrt(g / (g - 1) * np.sum(contrib**2)))
    return diff, se


def loo_se(residuals: np.ndarray, groups: np.ndarray) -> float:
    """Standard error of the LOO mean absolute error (over the groups of models)."""
    r = np.abs(residuals)
    return paired_margin(r, np.zeros_like(r), groups)[1]


def chi2_sf(x: float, k: int) -> float:
    """P(χ²_k > x), exactly, from the closed forms for integer k:
    even k:  e^{−x/2} Σ_{j<k/2} (x/2)^j / j!
    odd k:   erfc(√(x/2)) + e^{−x/2} Σ_{j=0}^{(k−3)/2} (x/2)^{j+1/2} / Γ(j + 3/2)."""
    if x <= 0:
        return 1.0
    h = x / 2.0
    if k % 2 == 0:
        term, total = 1.0, 1.0
        for j in range(1, k // 2):
            term *= h / j
            total += term
        return min(1.0, math.exp(-h) * total)
    total = math.erfc(math.sqrt(h))
    term = math.sqrt(h) / math.gamma(1.5)
    for j in range((k - 1) // 2):
        total += math.exp(-h) * term
        term *= h / (j + 1.5)
    return min(1.0, total)


def chi2_upper(k: int, tail: float = 0.05) -> float:
    """The x with P(χ²_k > x) = tail (bisection on chi2_sf)."""
    lo, hi = 0.0, float(k) + 10.0 * math.sqrt(2.0 * k) + 50.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if chi2_sf(mid, k) > tail:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)

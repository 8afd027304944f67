"""How well a measure ranks the generalization gaps of a sweep of models.

Three statistics from Jiang et al. 2020 ("Fantastic Generalization Measures and Where to Find
Them", and the NeurIPS 2020 PGDL competition), each computed the same way for a measure and
for a trivial baseline so the two can be compared:

- Kendall τ-b between the measure and the gap over all models;
- granulated Kendall Ψ: τ within groups of models that differ in one hyperparameter only,
  averaged per hyperparameter, then over hyperparameters;
- the conditional mutual information between sign(Δgap) and sign(Δmeasure) over pairs of
  models, minimised over conditioning sets of at most two hyperparameters.

A hyperparameter value is a number or a string; models are grouped by equality of values
(numbers compared as floats, a missing value is a value of its own).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

HpValue = float | int | str
Hyperparameters = Mapping[str, HpValue]
_MISSING = ("missing",)


def _canon(value: HpValue | None) -> tuple:
    """A hashable, type-aware key: 32 and 32.0 are equal, "32" is not."""
    if value is None:
        return _MISSING
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", float(value))
    return ("str", str(value))


def _codes(values: Sequence[HpValue | None]) -> np.ndarray:
    """Integer codes of hyperparameter values, equal codes for equal values."""
    seen: dict[tuple, int] = {}
    return np.array([seen.setdefault(_canon(v), len(seen)) for v in values], dtype=int)


def kendall_tau_b(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    """Kendall's τ-b with ties:

        τ_b = (n_c − n_d) / √((n₀ − n₁)(n₀ − n₂)),

    n_c, n_d the concordant and discordant pairs, n₀ = n(n−1)/2, n₁ = Σ t(t−1)/2 over groups
    of tied x, n₂ the same over tied y. Conventions for the degenerate cases, chosen so a
    measure that does not vary earns no credit: y (the gap) constant, or fewer than two
    models: None (nothing to rank); x (the measure) constant while y varies: 0.0.
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.shape != ya.shape:
        raise ValueError(f"x has {xa.size} values, y has {ya.size}")
    n = xa.size
    if n < 2:
        return None
    iu = np.triu_indices(n, k=1)
    sx = np.sign(xa[:, None] - xa[None, :])[iu]
    sy = np.sign(ya[:, None] - ya[None, :])[iu]
    n0 = n * (n - 1) / 2
    untied_x = float(np.count_nonzero(sx))  # n₀ − n₁
    untied_y = float(np.count_nonzero(sy))  # n₀ − n₂
    if untied_y == 0 or n0 == 0:
        return None
    if untied_x == 0:
        return 0.0
    return float(np.sum(sx * sy) / math.sqrt(untied_x * untied_y))


@dataclass
class HyperparameterTau:
    """ψᵢ: the mean τ over the groups that vary hyperparameter i only, and how many there were."""

    tau: float | None
    groups: int


@dataclass
class Granulated:
    psi: float | None
    per_hyperparameter: dict[str, HyperparameterTau] = field(default_factory=dict)


def hyperparameter_names(hps: Sequence[Hyperparameters]) -> list[str]:
    return sorted({k for h in hps for k in h})


def granulated_kendall(
    x: Sequence[float], y: Sequence[float], hps: Sequence[Hyperparameters]
) -> Granulated:
    """Granulated Kendall Ψ (Jiang et al. 2020, eq. 4):

        ψᵢ = (1/mᵢ) Σ_{θ₋ᵢ} τ({(μ(θ), g(θ)) : θ agrees with θ₋ᵢ on every hyperparameter but i})
        Ψ  = (1/k) Σᵢ ψᵢ

    over the k hyperparameters that take at least two values in the study. A group is the set
    of models sharing every other hyperparameter's value; groups of fewer than two models and
    groups whose gaps are all equal (τ undefined) are skipped, and mᵢ counts the groups used.
    ψᵢ is None when no group is usable; Ψ is the mean of the ψᵢ that exist (None if none).
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    names = hyperparameter_names(hps)
    per: dict[str, HyperparameterTau] = {}
    for name in names:
        if len({_canon(h.get(name)) for h in hps}) < 2:
            continue
        others = [n for n in names if n != name]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for idx, h in enumerate(hps):
            groups[tuple(_canon(h.get(o)) for o in others)].append(idx)
        taus = []
        for members in groups.values():
            if len(members) < 2:
                continue
            t = kendall_tau_b(xa[members], ya[members])
            if t is not None:
                taus.append(t)
        per[name] = HyperparameterTau(tau=float(np.mean(taus)) if taus else None, groups=len(taus))
    psis = [p.tau for p in per.values() if p.tau is not None]
    return Granulated(psi=float(np.mean(psis)) if psis else None, per_hyperparameter=per)


@dataclass
class ConditionalMI:
    """K(μ) = min over S of Î(V_μ; V_g | U_S), the minimising S, and Î for every S tried
    (None where H(V_g | U_S) = 0)."""

    value: float | None
    conditioning: list[str] | None
    per_set: dict[str, float | None] = field(default_factory=dict)


def _entropies(counts: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of a count table; an all-zero row has entropy 0."""
    totals = counts.sum(axis=1, keepdims=True)
    p = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(axis=1)


def conditional_mutual_information(
    x: Sequence[float], y: Sequence[float], hps: Sequence[Hyperparameters], max_set: int = 2
) -> ConditionalMI:
    """PGDL's conditional mutual information (Jiang et al. 2020, §"Conditional independence";
    the competition's scoring program), in the pair-based form, exactly:

    Draw an ordered pair (a, b) of distinct models uniformly from the n(n−1) such pairs. Let
    V_g = sign(g_a − g_b) and V_μ = sign(μ_a − μ_b), each in {−1, 0, +1} (a tie is a value of
    its own), and U_S = (θ_a[S], θ_b[S]) the values of the hyperparameters in S for both
    models. With p the empirical distribution over the pairs,

        I(V_μ; V_g | U_S) = Σ_u p(u) Σ_{v,w} p(v, w | u) log[p(v, w | u) / (p(v | u) p(w | u))]
        H(V_g | U_S)      = −Σ_u p(u) Σ_w p(w | u) log p(w | u)
        Î                 = I / H   (in [0, 1]; the base of the log cancels)
        K(μ)              = min over S ⊆ hyperparameters, |S| ≤ max_set, with H > 0, of Î.

    S = ∅ gives the plain normalised mutual information. A high K means the measure tells the
    gap's order apart even among pairs whose hyperparameters in S agree, for every such S;
    K ≈ 0 means that, given some hyperparameters, the measure adds nothing about the gap.
    Unlike the competition's code, cells are weighted by p(u) (the paper's definition) rather
    than equally, and no pair of a model with itself is counted.
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    n = xa.size
    if n < 2:
        return ConditionalMI(value=None, conditioning=None)
    a, b = np.where(~np.eye(n, dtype=bool))
    vm = np.sign(xa[a] - xa[b]).astype(int) + 1  # 0, 1, 2
    vg = np.sign(ya[a] - ya[b]).astype(int) + 1
    names = [nm for nm in hyperparameter_names(hps) if len({_canon(h.get(nm)) for h in hps}) >= 2]
    codes = {nm: _codes([h.get(nm) for h in hps]) for nm in names}
    per_set: dict[str, float | None] = {}
    best: tuple[float, list[str]] | None = None
    for size in range(0, max_set + 1):
        for subset in itertools.combinations(names, size):
            key = np.zeros(a.size, dtype=np.int64)
            for s in subset:  # mixed radix: one integer per (θ_a[S], θ_b[S])
                key = (key * n + codes[s][a]) * n + codes[s][b]
            _, cell = np.unique(key, return_inverse=True)
            tables = np.zeros((int(cell.max()) + 1, 3, 3))
            np.add.at(tables, (cell.ravel(), vm, vg), 1.0)
            weight = tables.sum(axis=(1, 2)) / a.size  # p(u)
            hg = _entropies(tables.sum(axis=1))  # H(V_g | U_S = u)
            hm = _entropies(tables.sum(axis=2))
            joint = _entropies(tables.reshape(len(tables), 9))
            mi = float(np.sum(weight * (hm + hg - joint)))  # I = H(V_μ) + H(V_g) − H(V_μ, V_g)
            h = float(np.sum(weight * hg))
            value = None if h <= 1e-12 else max(0.0, mi / h)
            per_set["{" + ", ".join(subset) + "}"] = value
            if value is not None and (best is None or value < best[0] - 1e-12):
                best = (value, list(subset))
    if best is None:
        return ConditionalMI(value=None, conditioning=None, per_set=per_set)
    return ConditionalMI(value=best[0], conditioning=best[1], per_set=per_set)

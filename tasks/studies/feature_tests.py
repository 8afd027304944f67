"""Whether each feature's ranking of the gaps is more than chance and more than the best
baseline's: permutation p-values of τ and Ψ, a bootstrap interval of τ, the paired bootstrap
against the best baseline, all Holm-corrected across the measures (significance.py holds the
tests themselves).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.studies import significance as sig
from tasks.studies.features import Feature, best
from tasks.studies.results import FeatureReport, MemberData, Significance

PermutationResult = tuple[float | None, float | None, str, int]  # p_tau, p_psi, method, count


def _permutation_tests(
    ranked: list[FeatureReport], raw: np.ndarray, y: np.ndarray, hps: list[dict[str, Any]]
) -> dict[str, PermutationResult]:
    """Permutation p-values of τ and Ψ per feature; features present on the same models
    share one pass."""
    tests: dict[str, PermutationResult] = {}
    masks: dict[tuple[bool, ...], list[int]] = {}
    for j in range(len(ranked)):
        masks.setdefault(tuple(np.isfinite(raw[:, j])), []).append(j)
    for mask, cols in masks.items():
        rows = np.flatnonzero(mask)
        at = np.array(cols, dtype=int)
        if rows.size < 3:
            continue
        reps = [ranked[j] for j in cols]
        t = sig.permutation_test(
            raw[np.ix_(rows, at)],
            y[rows],
            [hps[r] for r in rows],
            [r.kendall_tau for r in reps],
            [r.granulated.psi for r in reps],
        )
        for k, j in enumerate(cols):
            tests[ranked[j].name] = (t.p_tau[k], t.p_psi[k], t.method, t.permutations)
    return tests


def _vs_best_baseline(
    ranked: list[FeatureReport], boot: np.ndarray
) -> tuple[dict[int, float | None], str | None]:
    """Each measure's one-sided bootstrap p-value against the best baseline, and its name.
    The best baseline is chosen once, on all the models, not again in each resample (the
    baseline the verdict names: largest |τ|, ties to the smaller LOO error)."""
    base_cols = [j for j, r in enumerate(ranked) if r.kind == "baseline"]
    measures = [j for j, r in enumerate(ranked) if r.kind == "measure"]
    chosen = best([ranked[j] for j in base_cols])
    vs: dict[int, float | None] = {j: None for j in measures}
    if chosen is None:
        return vs, None
    b = next(j for j in base_cols if ranked[j].name == chosen.name)
    tau_b = float(ranked[b].kendall_tau)  # type: ignore[arg-type]
    for j in measures:
        tau_m = float(ranked[j].kendall_tau)  # type: ignore[arg-type]
        vs[j] = sig.beats_baseline_p(boot[:, j], boot[:, b], tau_m, tau_b)
    return vs, chosen.name


def fill_significance(
    feats: list[Feature],
    reports: dict[str, FeatureReport | None],
    units: list[MemberData],
    observed: list[int],
    groups: np.ndarray,
) -> None:
    """Fill each report's `significance` (module docstring of significance.py)."""
    pairs = [(f, r) for f in feats if (r := reports[f.name]) is not None]
    pairs = [(f, r) for f, r in pairs if r.kendall_tau is not None]
    if not pairs:
        return
    ranked = [r for _, r in pairs]
    y = np.array([units[i].gap for i in observed], dtype=float)
    hps = [units[i].hyperparameters for i in observed]
    raw = np.array(
        [[np.nan if f.raw[i] is None else float(f.raw[i]) for f, _ in pairs] for i in observed]  # type: ignore[arg-type]
    )
    tests = _permutation_tests(ranked, raw, y, hps)
    boot = sig.bootstrap_taus(raw, y, sig.bootstrap_weights(groups[observed]))
    vs, vs_name = _vs_best_baseline(ranked, boot)
    measures = [j for j, r in enumerate(ranked) if r.kind == "measure"]

    def p_of(j: int, k: int) -> float | None:
        return tests.get(ranked[j].name, (None, None, "", 0))[k]  # type: ignore[return-value]

    tau_adj = sig.holm([p_of(j, 0) for j in measures])
    psi_adj = sig.holm([p_of(j, 1) for j in measures])
    beats_raw = [
        max(p_of(j, 0), vs[j]) if p_of(j, 0) is not None and vs[j] is not None else None  # type: ignore[type-var]
        for j in measures
    ]
    beats_adj = sig.holm(beats_raw)
    adjusted = {j: (tau_adj[k], psi_adj[k], beats_adj[k]) for k, j in enumerate(measures)}
    for j, r in enumerate(ranked):
        if r.name not in tests:
            continue
        p_tau, p_psi, method, m = tests[r.name]
        a_tau, a_psi, a_beats = adjusted.get(j, (None, None, None))
        r.significance = Significance(
            method=method,  # type: ignore[arg-type]
            permutations=m,
            tau_p=p_tau,
            tau_p_adjusted=a_tau,
            psi_p=p_psi,
            psi_p_adjusted=a_psi,
            tau_interval=sig.percentile_interval(boot[:, j]),
            vs_best_baseline_p=vs.get(j),
            vs_baseline=vs_name if vs.get(j) is not None else None,
            beats_p=a_beats,
        )

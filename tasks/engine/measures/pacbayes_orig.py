"""Jiang et al.'s pacbayes.orig, at their σ: √((‖w‖²/(4σ²) + ln(m/σ) + 10)/m).

Jiang et al. 2020 ("Fantastic Generalization Measures", measures 48-49): σ is the largest
isotropic weight noise N(0, σ²I) whose expected train-accuracy drop is 0.1 — the σ of
pacbayes.flatness, found by the same bisection on [0, σ_max] (depth 15, 10 Monte Carlo draws
per step) — and with m the number of examples used

    pacbayes.orig = √((‖w‖²/(4σ²) + ln(m/σ) + 10) / m)          (prior centred at 0)
    pacbayes.init = √((‖w − w₀‖²/(4σ²) + ln(m/σ) + 10) / m)     (prior centred at w₀)

The value is pacbayes.orig; pacbayes.init is in the diagnostics when an initial model is given.
These are the terms of a PAC-Bayes bound evaluated at a σ chosen after looking at the data,
so they are measures to rank models with, not bounds (pacbayes_bound gives a bound).
Classification (cross_entropy) only.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from pydantic import Field

from tasks.engine.measures.base import MeasureParams

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext

NAME = "pacbayes_orig"


class Params(MeasureParams):
    target_drop: float = Field(
        default=0.1, gt=0, lt=1, description="Expected train-accuracy drop that defines σ."
    )
    sigma_max: float = Field(
        default=2.0, gt=0, le=1000, description="Upper end of the bisection interval [0, σ_max]."
    )
    depth: int = Field(default=15, ge=1, le=60, description="Bisection steps.")
    samples: int = Field(
        default=10, ge=1, le=10_000, description="Monte Carlo noise draws per bisection step."
    )
    max_examples: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Use the first N examples (m = N) for the search and the term; all when "
        "omitted.",
    )


def run(ctx: MeasureContext, params: Params) -> dict:
    from tasks.engine.pacbayes import jiang_term
    from tasks.engine.perturbation import (
        flatness_result,
        flatness_search,
        isotropic_std,
        require_classification,
    )

    problem = ctx.problem
    require_classification(problem, NAME)
    search = flatness_search(
        problem,
        isotropic_std(problem),
        target_drop=params.target_drop,
        sigma_max=params.sigma_max,
        depth=params.depth,
        samples=params.samples,
        seed=params.seed,
        max_examples=params.max_examples,
        ctx=ctx,
    )
    if not search.reached:
        warnings.warn(
            f"noise up to sigma_max={params.sigma_max} never cost {params.target_drop} "
            "accuracy: σ is capped at sigma_max and pacbayes_orig is evaluated there "
            "(raise sigma_max)",
            stacklevel=2,
        )
    m, sigma = search.examples, search.sigma
    w = problem.parameter_vector().double()
    norm_sq = float(w.pow(2).sum())
    flat = flatness_result(search, params, "sigma")
    diagnostics: dict[str, Any] = {
        "kind": "measure",
        "sigma": sigma,
        "m": m,
        "weight_norm_sq": norm_sq,
        "pacbayes_flatness": flat["value"],
        "search": flat["diagnostics"],
    }
    w0 = ctx.initial_vector()
    if w0 is not None:
        dist_sq = float((w - w0.double()).pow(2).sum())
        diagnostics["distance_from_init_sq"] = dist_sq
        diagnostics["pacbayes_init"] = jiang_term(dist_sq, sigma, m)
    return {
        "value": jiang_term(norm_sq, sigma, m),
        "converged": search.reached,
        "hvps": 0,
        "diagnostics": diagnostics,
    }

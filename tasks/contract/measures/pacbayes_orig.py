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

from tasks.contract.measures.base import first_examples
from tasks.contract.measures.pacbayes import FlatnessParams, drop_field

NAME = "pacbayes_orig"


class Params(FlatnessParams):
    target_drop: float = drop_field("σ")
    max_examples: int | None = first_examples(
        "Use the first N examples (m = N) for the search and the term; all when omitted."
    )

"""PAC-Bayesian flatness 1/σ², σ the largest isotropic weight noise costing 0.1 train accuracy.

Jiang et al. 2020 (pacbayes.flatness): with z ~ N(0, I) on the selected weights,

    σ* = max { σ ∈ [0, σ_max] : acc(w) − E_z acc(w + σ z) ≤ target_drop },   value = 1/σ*²

found by bisection on [0, σ_max] (depth 15) with `samples` Monte Carlo draws per step (the same
draws at every step). A larger value means the train accuracy breaks under smaller noise: a
sharper solution. Not invariant to rescaling the layers of a ReLU network (see
pacbayes_mag_flatness). Classification (cross_entropy) only.
"""

from __future__ import annotations

from tasks.contract.measures.base import first_examples
from tasks.contract.measures.pacbayes import SEARCH_EXAMPLES, FlatnessParams

NAME = "pacbayes_flatness"


class Params(FlatnessParams):
    max_examples: int | None = first_examples(SEARCH_EXAMPLES)

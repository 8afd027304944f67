"""Weight norms: ‖w‖₂ over the selected parameters, per tensor, and ‖w − w₀‖ from initialisation.

    value = ‖w‖₂ = √(Σ_k ‖W_k‖²_F)

Diagnostics: each tensor's ‖W_k‖_F, the sum of squared Frobenius norms Σ_k ‖W_k‖²_F
(Jiang et al.'s param_norm), and, when the initial weights w₀ are given, ‖w − w₀‖₂ with each
tensor's ‖W_k − W_k⁰‖_F (‖w − w₀‖² is Jiang et al.'s frob-distance). The norms are trivial
baselines every flatness measure should be shown beside (docs/studies.md). No HVPs.
"""

from __future__ import annotations

from tasks.contract.measures.base import MeasureParams

NAME = "weight_norms"


class Params(MeasureParams):
    pass

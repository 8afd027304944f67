"""Kendall τ-b, granulated Ψ and the conditional mutual information against values worked
out by hand (the working is in the comments; no expected value comes from the code)."""

from __future__ import annotations

import math

import pytest

from tasks.studies.ranking import (
    conditional_mutual_information,
    granulated_kendall,
    kendall_tau_b,
)


def test_tau_b_with_ties_in_both() -> None:
    # x = 1 2 2 3 4, y = 1 3 2 2 5. Of the 10 pairs: (1,2) tied in x, (2,3) tied in y,
    # (1,3) discordant (x 2→3, y 3→2), the other 7 concordant.
    # τ_b = (7 − 1) / √((10 − 1)(10 − 1)) = 6/9
    assert kendall_tau_b([1, 2, 2, 3, 4], [1, 3, 2, 2, 5]) == pytest.approx(6 / 9)


def test_tau_b_degenerate_cases() -> None:
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau_b([5, 5, 5], [1, 2, 3]) == 0.0  # a constant measure ranks nothing
    assert kendall_tau_b([1, 2, 3], [4, 4, 4]) is None  # no gap order to rank
    assert kendall_tau_b([1], [1]) is None


# Six models, learning rate × batch size, with a measure μ and a gap g:
#   model  lr    bs   μ  g
#   0      0.1   32   1  1
#   1      0.1   64   2  3
#   2      0.1   128  3  2
#   3      0.01  32   4  4
#   4      0.01  64   0  6
#   5      0.01  128  5  5
GRID = [
    {"learning_rate": 0.1, "batch_size": 32},
    {"learning_rate": 0.1, "batch_size": 64},
    {"learning_rate": 0.1, "batch_size": 128},
    {"learning_rate": 0.01, "batch_size": 32},
    {"learning_rate": 0.01, "batch_size": 64},
    {"learning_rate": 0.01, "batch_size": 128},
]
MU = [1, 2, 3, 4, 0, 5]
GAP = [1, 3, 2, 4, 6, 5]


def test_tau_on_the_grid() -> None:
    # 15 pairs; discordant: (0,4) (1,2) (1,4) (2,4) (3,4) (4,5), the other 9 concordant.
    # τ = (9 − 6) / 15
    assert kendall_tau_b(MU, GAP) == pytest.approx(0.2)


def test_granulated_kendall_on_the_grid() -> None:
    # Varying only lr (groups by bs, two models each):
    #   bs 32: {0,3} μ 1→4, g 1→4 → +1;  bs 64: {1,4} μ 2→0, g 3→6 → −1;
    #   bs 128: {2,5} μ 3→5, g 2→5 → +1.                    ψ_lr = 1/3 over 3 groups
    # Varying only bs (groups by lr, three models each):
    #   lr 0.1: μ 1 2 3, g 1 3 2 → (2 − 1)/3 = +1/3;
    #   lr 0.01: μ 4 0 5, g 4 6 5 → (1 − 2)/3 = −1/3.        ψ_bs = 0 over 2 groups
    # Ψ = (1/3 + 0) / 2 = 1/6
    g = granulated_kendall(MU, GAP, GRID)
    assert g.psi == pytest.approx(1 / 6)
    assert g.per_hyperparameter["learning_rate"].tau == pytest.approx(1 / 3)
    assert g.per_hyperparameter["learning_rate"].groups == 3
    assert g.per_hyperparameter["batch_size"].tau == pytest.approx(0.0, abs=1e-12)
    assert g.per_hyperparameter["batch_size"].groups == 2


def test_granulated_skips_singletons_and_constant_hyperparameters() -> None:
    # Three models, lr varies but every group by the other hyperparameters (bs) has one
    # model; wd takes a single value and is not a hyperparameter of the sweep at all.
    hps = [
        {"learning_rate": 0.1, "batch_size": 32, "wd": 0},
        {"learning_rate": 0.2, "batch_size": 64, "wd": 0},
        {"learning_rate": 0.3, "batch_size": 128, "wd": 0},
    ]
    g = granulated_kendall([1, 2, 3], [1, 2, 3], hps)
    assert set(g.per_hyperparameter) == {"learning_rate", "batch_size"}
    assert g.per_hyperparameter["learning_rate"].tau is None
    assert g.per_hyperparameter["learning_rate"].groups == 0
    assert g.psi is None


# Four models on a 2 × 2 grid (lr, bs ∈ {1, 2}) with gaps g = 1 2 4 3 (A B C D):
GRID4 = [
    {"learning_rate": 1, "batch_size": 1},  # A
    {"learning_rate": 1, "batch_size": 2},  # B
    {"learning_rate": 2, "batch_size": 1},  # C
    {"learning_rate": 2, "batch_size": 2},  # D
]
GAP4 = [1, 2, 4, 3]


def _h(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def test_cmi_of_a_measure_that_orders_all_but_one_pair() -> None:
    # μ = 1 2 3 4: of the 6 unordered pairs only CD disagrees with the gap (μ up, g down).
    # S = ∅: over the 12 ordered pairs V_μ = V_g with probability 5/6, both marginals are
    #   uniform on ±1, so I = 1 − h(1/6) bits, H(V_g) = 1 bit: Î = 1 − h(1/6) ≈ 0.35.
    # S = {lr}: cells (1,1) = {AB, BA} agree and (2,2) = {CD, DC} disagree: I = H = 1 bit
    #   each; cells (1,2) and (2,1) have a constant V_g (H = 0). p = 2/12 2/12 4/12 4/12:
    #   Î = (4/12) / (4/12) = 1.
    # S = {bs}: (1,1) = {AC, CA}, (2,2) = {BD, DB} agree: I = H = 1; (1,2) = {AB, AD, CB, CD}
    #   gives (V_μ, V_g) = (−,−) (−,−) (+,+) (−,+): H(V_μ) = h(1/4), H(V_g) = 1,
    #   H(joint) = 1.5, I = h(1/4) − 0.5; (2,1) the same, flipped.
    #   Î = (4/12 · 1 + 8/12 · (h(1/4) − 0.5)) / 1.
    # S = {lr, bs}: every ordered pair is a cell of its own, H(V_g | U_S) = 0: no value.
    # K = min = 1 − h(1/6), at S = ∅.
    c = conditional_mutual_information([1, 2, 3, 4], GAP4, GRID4)
    assert c.value == pytest.approx(1 - _h(1 / 6))
    assert c.conditioning == []
    assert c.per_set["{learning_rate}"] == pytest.approx(1.0)
    assert c.per_set["{batch_size}"] == pytest.approx(4 / 12 + 8 / 12 * (_h(0.25) - 0.5))
    assert c.per_set["{batch_size, learning_rate}"] is None


def test_cmi_of_a_measure_that_only_encodes_the_learning_rate() -> None:
    # μ = 1 1 2 2 (a function of lr, like the 1/learning_rate baseline).
    # S = ∅: V_μ = 0 on AB BA CD DC (there V_g is ±1 evenly), V_μ = V_g on the other 8:
    #   I = H(V_g) − H(V_g | V_μ) = 1 − (4/12)·1 = 2/3 bits; Î = 2/3.
    # S = {lr}: cells (1,1) {AB, BA} and (2,2) {CD, DC} have V_μ = 0, so I = 0 there; the
    #   cross cells have a constant V_g. Î = 0: given lr, μ says nothing about the gap.
    # S = {bs}: (1,1), (2,2) agree: I = H = 1; (1,2) = (0,−) (−,−) (+,+) (0,+): I = 1 − 1/2;
    #   Î = 4/12 · 1 + 8/12 · 1/2 = 2/3.
    # K = 0 at S = {learning_rate}.
    c = conditional_mutual_information([1, 1, 2, 2], GAP4, GRID4)
    assert c.value == pytest.approx(0.0, abs=1e-12)
    assert c.conditioning == ["learning_rate"]
    assert c.per_set["{}"] == pytest.approx(2 / 3)
    assert c.per_set["{batch_size}"] == pytest.approx(2 / 3)


def test_cmi_of_a_perfect_measure_is_one() -> None:
    # V_μ = V_g on every pair: I = H(V_g | U_S) for every S with H > 0, so Î = 1.
    c = conditional_mutual_information([10, 20, 40, 30], GAP4, GRID4)
    assert c.value == pytest.approx(1.0)

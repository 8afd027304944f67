"""The reproductions in examples/reproductions, reduced (`quick=True`: three seeds each), run
through the SDK against the real service; each checks its claim the way the example states
it, over the seeds, and that the printed verdict says what the rows show. Each quick run is
sized for about a minute on an idle 2-core machine (the wall time is not asserted:
a shared machine would make it flaky)."""

from __future__ import annotations

import math

import pytest

from examples.reproductions import learning_rate, rescaling, weight_decay
from examples.reproductions.common import digits, equivalence, estimate
from sharpness_client import Client
from tests.integration.conftest import Stack


@pytest.fixture(scope="module")
def data():
    return digits()


@pytest.mark.integration
def test_larger_learning_rate_gives_smaller_lambda_max(sdk_stack: Stack, data) -> None:
    with Client(sdk_stack.url) as client:
        rows = learning_rate.run(client, data, quick=True)
    assert len(rows) == 12 and {r["seed"] for r in rows} == {0, 1, 2}
    assert all(r["lambda_max"] is not None for r in rows), rows  # equal training loss reached
    assert all(r["train_loss"] <= learning_rate.TARGET_LOSS for r in rows)
    assert learning_rate.effect_holds(rows), rows
    # gradient descent at η = 1 trains at the edge of stability: λmax·η/2 close to 1
    gd = [r["lambda_max*lr/2"] for r in rows if r["batch_size"] == "full" and r["lr"] == 1]
    assert len(gd) == 3 and all(0.8 < e < 1.2 for e in gd), gd
    # the batch-size interaction: at the same η, full batch is sharper than batch 32
    by = {(r["batch_size"], r["lr"], r["seed"]): r["lambda_max"] for r in rows}
    assert all(by[("full", 0.5, s)] > by[("32", 0.5, s)] for s in range(3))
    lines = learning_rate.report(rows)
    assert lines[-1].endswith("holds.") and "interaction" in "\n".join(lines)


@pytest.mark.integration
def test_rescaling_moves_lambda_max_not_adaptive_sharpness(sdk_stack: Stack, data) -> None:
    with Client(sdk_stack.url) as client:
        rows = rescaling.run(client, data, quick=True)
    assert {r["alpha"] for r in rows} == {0.1, 1.0, 3.0} and len(rows) == 9
    assert rescaling.effect_holds(rows), rows
    n_test = len(data.y_test)
    for seed in range(3):
        mine = [r for r in rows if r["seed"] == seed]
        # the same function up to float32 rounding: at most one test example changes
        accs = [r["test_acc"] for r in mine]
        assert max(accs) - min(accs) <= 1 / n_test + 1e-9
    # standard (unscaled) sharpness, measured on the first seed, is not invariant either
    assert rescaling.spread([r["standard_sharpness"] for r in rows if r["seed"] == 0]) > 0.1
    assert rescaling.report(rows)[-1].endswith("holds.")


@pytest.mark.integration
def test_weight_decay_at_equal_training_loss(sdk_stack: Stack, data) -> None:
    with Client(sdk_stack.url) as client:
        rows = weight_decay.run(client, data, quick=True)
    assert len(rows) == 6 and {r["seed"] for r in rows} == {0, 1, 2}
    c = weight_decay.comparison(rows)
    assert c["equal_fit"], rows  # compared at equal training loss, not equal epochs
    by = {(r["weight_decay"], r["seed"]): r for r in rows}
    for s in range(3):
        assert by[(0.003, s)]["weight_norm"] < by[(0.0, s)]["weight_norm"]
    assert math.isfinite(c["ratio"].low) and math.isfinite(c["accuracy"].low)
    # the verdict printed is the one the statistics give, whichever it is
    lines = weight_decay.report(rows)
    holds = weight_decay.effect_holds(rows)
    assert lines[-1].endswith("holds." if holds else "does not hold.")
    assert ("equal accuracy: holds" in lines[2]) == c["accuracy"].equal


def test_interval_and_equivalence_by_hand() -> None:
    # mean 2, sd 1, n 3: t_{0.975, 2} = 4.303, half-width 4.303/√3 = 2.4843
    e = estimate([1.0, 2.0, 3.0])
    assert (e.mean, e.n) == (2.0, 3)
    assert e.high - e.mean == pytest.approx(4.303 / math.sqrt(3))
    # TOST: mean 0.001, sd 0.001, n 4: 90% half-width t_{0.95, 3} · 0.001/2 = 0.0011765
    t = equivalence([0.0, 0.001, 0.002, 0.001], margin=0.01)
    assert t.high - t.mean == pytest.approx(2.353 * math.sqrt(2 / 3) * 0.001 / 2)
    assert t.equal
    assert not equivalence([0.0, 0.001, 0.002, 0.001], margin=0.001).equal
    # one seed never shows equality, however small the difference
    assert not equivalence([0.0], margin=0.01).equal


def test_effect_checks_can_fail() -> None:
    """The checks are not vacuous: reversed or noisy tables fail them."""
    up = [
        {"batch_size": "32", "lr": lr, "seed": s, "lambda_max": lam * (1 + 0.01 * s)}
        for s in range(3)
        for lr, lam in [(0.1, 1.0), (0.3, 2.0)]
    ]
    assert not learning_rate.effect_holds(up)
    assert learning_rate.report(up)[-1].endswith("does not hold.")
    mixed = [  # falls in one seed, rises in the others: the interval straddles 0
        {"batch_size": "32", "lr": lr, "seed": s, "lambda_max": lam}
        for s, pair in enumerate([[(0.1, 2.0), (0.3, 1.0)], [(0.1, 1.0), (0.3, 1.1)]] * 2)
        for lr, lam in pair
    ]
    assert not learning_rate.effect_holds(mixed)
    moved = [
        {"seed": 0, "alpha": 1.0, "lambda_max": 1.0, "adaptive_sharpness": 1.0},
        {"seed": 0, "alpha": 3.0, "lambda_max": 5.0, "adaptive_sharpness": 1.1},
    ]
    assert not rescaling.effect_holds(moved)

    def wd_rows(acc_drop: float, lam_up: float, loss: float = 0.09) -> list[dict]:
        return [
            {
                "weight_decay": wd,
                "seed": s,
                "train_loss": loss,
                "lambda_max": 2.0 + (lam_up if wd else 0.0) + 0.01 * s,
                "test_acc": 0.97 - (acc_drop if wd else 0.0) + 0.001 * s * (wd > 0),
            }
            for wd in (0.0, 0.003)
            for s in range(3)
        ]

    assert weight_decay.effect_holds(wd_rows(0.0, 0.5))
    assert not weight_decay.effect_holds(wd_rows(0.012, 0.5))  # 1.1 points lower: beyond ±1
    assert not weight_decay.effect_holds(wd_rows(0.0, -0.5))  # flatter
    assert not weight_decay.effect_holds(wd_rows(0.0, 0.5, loss=0.2))  # not at equal fit
    assert weight_decay.report(wd_rows(0.012, 0.5))[2].endswith("equal accuracy: does not hold")

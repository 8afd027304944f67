"""The reproductions in examples/reproductions, reduced (`quick=True`), run through the SDK
against the real service; each asserts the direction of its published effect."""

from __future__ import annotations

import pytest

from examples.reproductions import learning_rate, rescaling, weight_decay
from examples.reproductions.common import digits
from sharpness_client import Client
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data():
    return digits()


def test_larger_learning_rate_gives_smaller_lambda_max(sdk_stack: Stack, data) -> None:
    with Client(sdk_stack.url) as client:
        rows = learning_rate.run(client, data, quick=True)
    assert len(rows) == 3 and all(r["test_acc"] is not None for r in rows)
    assert learning_rate.effect_holds(rows), rows


def test_rescaling_moves_lambda_max_not_adaptive_sharpness(sdk_stack: Stack, data) -> None:
    with Client(sdk_stack.url) as client:
        rows = rescaling.run(client, data, quick=True)
    assert rescaling.effect_holds(rows), rows
    # the same function: equal test accuracy at every α
    assert len({round(r["test_acc"], 6) for r in rows}) == 1
    # standard (unscaled) sharpness is not invariant either
    assert rescaling.spread([r["standard_sharpness"] for r in rows]) > 0.1


def test_weight_decay_gives_sharper_nets_at_equal_accuracy(sdk_stack: Stack, data) -> None:
    with Client(sdk_stack.url) as client:
        rows = weight_decay.run(client, data, quick=True)
    assert weight_decay.effect_holds(rows), rows
    assert rows[-1]["weight_norm"] < rows[0]["weight_norm"]


def test_effect_checks_can_fail() -> None:
    """The direction checks are not vacuous: reversed tables fail them."""
    up = [{"batch_size": 32, "lr": lr, "lambda_max": lam} for lr, lam in [(0.1, 1.0), (0.3, 2.0)]]
    assert not learning_rate.effect_holds(up)
    moved = [
        {"lambda_max": 1.0, "adaptive_sharpness": 1.0},
        {"lambda_max": 5.0, "adaptive_sharpness": 1.1},
    ]
    assert not rescaling.effect_holds(moved)
    flatter = [
        {"weight_decay": 0.0, "lambda_max": 3.0, "test_acc": 0.9},
        {"weight_decay": 0.01, "lambda_max": 2.0, "test_acc": 0.9},
    ]
    assert not weight_decay.effect_holds(flatter)

"""The gap predictor: exact leave-one-out, feature choice inside the loop, and its error on
data with a known linear relation."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.studies.predictor import (
    constant_loo,
    feature_columns,
    loo_predictions,
    nested_loo,
    ridge_fit,
)


def test_closed_form_loo_equals_refitting_without_each_point() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 2))
    y = x @ [1.5, -0.5] + rng.normal(size=12)
    explicit = []
    for i in range(12):
        keep = np.arange(12) != i
        b0, beta = ridge_fit(x[keep], y[keep])
        explicit.append(b0 + x[i] @ beta)
    np.testing.assert_allclose(loo_predictions(x, y), explicit, rtol=1e-10)


def test_constant_predictor_loo() -> None:
    # leaving out 1: mean(2, 6) = 4; leaving out 2: mean(1, 6) = 3.5; out 6: 1.5
    np.testing.assert_allclose(constant_loo(np.array([1.0, 2.0, 6.0])), [4.0, 3.5, 1.5])


def test_loo_error_on_a_known_linear_relation() -> None:
    # gap = 0.02 · x + 0.1 + N(0, 0.005²), with a pure-noise feature beside x. The best any
    # predictor can do is the noise: RMSE ≈ 0.005 (plus O(p/n) for the fitted coefficients).
    rng = np.random.default_rng(1)
    n = 40
    signal = rng.normal(size=n)
    noise_feature = rng.normal(size=n)
    gap = 0.02 * signal + 0.1 + rng.normal(scale=0.005, size=n)
    fit = nested_loo(np.column_stack([noise_feature, signal]), gap)
    assert fit.full_model.columns == (1,)
    assert fit.fold_choices[(1,)] == n  # the signal, in every fold
    assert 0.004 < fit.error.rmse < 0.0065
    assert fit.error.mae < 0.3 * np.mean(np.abs(gap - constant_loo(gap)))
    assert fit.full_model.coef[0] == pytest.approx(0.02, rel=0.05)


def test_loo_error_of_noise_is_no_better_than_the_mean() -> None:
    rng = np.random.default_rng(2)
    n = 30
    gap = rng.normal(size=n)
    fit = nested_loo(rng.normal(size=(n, 3)), gap)
    assert fit.error.rmse > 0.95 * np.sqrt(np.mean((gap - constant_loo(gap)) ** 2))


def test_encodings_value_and_log_where_positive_standardised() -> None:
    cols = feature_columns([1.0, 10.0, 100.0, None])
    assert set(cols) == {"none", "log"}
    # log values 0, ln10, 2 ln10 → standardised −√1.5, 0, √1.5
    np.testing.assert_allclose(cols["log"][:3], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)])
    assert np.isnan(cols["log"][3]) and np.isnan(cols["none"][3])
    assert set(feature_columns([-1.0, 0.0, 1.0])) == {"none"}
    np.testing.assert_array_equal(feature_columns([3.0, 3.0, 3.0])["none"], 0.0)

"""Fixtures of the engine tests: the shared dense cases (tests/engine/cases.py)."""

from __future__ import annotations

import pytest

from tests.engine.cases import MODELS, DenseCase, dense_case


@pytest.fixture(params=MODELS)
def dense(request: pytest.FixtureRequest) -> DenseCase:
    """Each test model with its exact Hessian, computed once per session."""
    return dense_case(request.param)

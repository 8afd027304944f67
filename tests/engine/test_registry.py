"""The engine computes exactly the measures the contract declares, with their parameters."""

from __future__ import annotations

import pytest

from tasks.contract.measures import catalogue
from tasks.engine import registry


def test_every_declared_measure_has_one_implementation() -> None:
    assert list(registry.IMPLEMENTATIONS) == list(catalogue.measures())
    for name, measure in registry.measures().items():
        declared = catalogue.get(name)
        assert measure.declared is declared
        assert measure.params is declared.params
        assert measure.summary == declared.summary
        assert measure.runner() is registry.IMPLEMENTATIONS[name]


def test_unknown_measure_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known measures: adaptive_sharpness"):
        registry.get("lambda_min")


def test_a_declared_measure_without_its_module_names_the_file_to_write() -> None:
    with pytest.raises(LookupError, match="tasks/engine/measures/lambda_min.py"):
        registry._implementation("lambda_min")

"""Which function computes each measure of the catalogue.

A measure is declared in the contract (tasks/contract/measures/: its name, summary, `Params`
and capabilities, listed in `catalogue.MEASURES`), so the gateway validates and lists measures
without the engine. Its computation is `run(ctx, params) -> dict` in
tasks/engine/measures/<name>.py, listed in `IMPLEMENTATIONS` below; this module joins the two
for the runner, the worker and notebooks (it imports torch).

Adding a measure: declare it in tasks/contract/measures/ (see catalogue.py), write its `run` in
tasks/engine/measures/<name>.py and add it to `IMPLEMENTATIONS`. It then appears in the job
spec, the API docs and the SDK.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from tasks.contract.measures import catalogue
from tasks.contract.measures.base import MeasureParams
from tasks.engine.context import MeasureContext
from tasks.engine.measures import (
    adaptive_sharpness,
    frobenius,
    lambda_max,
    output_margin,
    pacbayes_bound,
    pacbayes_flatness,
    pacbayes_mag_flatness,
    pacbayes_orig,
    preconditioned_lambda_max,
    spectral_density,
    top_eigenvalues,
    trace,
    weight_norms,
)

#: A measure's computation; its parameters are the measure's own `Params` model.
Run = Callable[[MeasureContext, Any], dict[str, Any]]

IMPLEMENTATIONS: dict[str, Run] = {
    "lambda_max": lambda_max.run,
    "top_eigenvalues": top_eigenvalues.run,
    "trace": trace.run,
    "frobenius": frobenius.run,
    "spectral_density": spectral_density.run,
    "adaptive_sharpness": adaptive_sharpness.run,
    "weight_norms": weight_norms.run,
    "output_margin": output_margin.run,
    "pacbayes_flatness": pacbayes_flatness.run,
    "pacbayes_mag_flatness": pacbayes_mag_flatness.run,
    "pacbayes_bound": pacbayes_bound.run,
    "pacbayes_orig": pacbayes_orig.run,
    "preconditioned_lambda_max": preconditioned_lambda_max.run,
}


@dataclass(frozen=True)
class Measure:
    """A declared measure with the function that computes it."""

    declared: catalogue.Measure
    run: Run

    @property
    def name(self) -> str:
        return self.declared.name

    @property
    def summary(self) -> str:
        return self.declared.summary

    @property
    def params(self) -> type[MeasureParams]:
        return self.declared.params

    def runner(self) -> Run:
        """The compute function."""
        return self.run


@cache
def measures() -> dict[str, Measure]:
    """Every declared measure with its computation, in the catalogue's order."""
    missing = [m.name for m in catalogue.MEASURES if m.name not in IMPLEMENTATIONS]
    undeclared = sorted(set(IMPLEMENTATIONS) - set(catalogue.measures()))
    if missing or undeclared:
        raise LookupError(
            f"measures declared without an implementation: {missing}; implemented without a "
            f"declaration: {undeclared}"
        )
    return {m.name: Measure(m, IMPLEMENTATIONS[m.name]) for m in catalogue.MEASURES}


def get(name: str) -> Measure:
    catalogue.get(name)  # an unknown name: the catalogue's error, listing the known ones
    return measures()[name]


def validate_params(name: str, params: dict[str, Any] | None) -> MeasureParams:
    """Validate a measure's parameters against its model (raises KeyError/ValidationError)."""
    return catalogue.validate_params(name, params)

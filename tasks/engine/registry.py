"""Which function computes each measure of the catalogue.

A measure is declared in the contract (tasks/contract/measures/: its name, summary, `Params`
and capabilities, listed in `catalogue.MEASURES`), so the gateway validates and lists measures
without the engine. Its computation is `run(ctx, params) -> dict` in
tasks/engine/measures/<name>.py, the module named as the measure; this module joins the two
for the runner, the worker and notebooks (it imports torch). The catalogue is the one list of
measures: nothing here lists them again.

Adding a measure: declare it in tasks/contract/measures/ (see catalogue.py) and write its `run`
in tasks/engine/measures/<name>.py. It then appears in the job spec, the API docs and the SDK.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from typing import Any

from tasks.contract.measures import catalogue
from tasks.contract.measures.base import MeasureParams
from tasks.engine import measures as implementations
from tasks.engine.context import MeasureContext

#: A measure's computation; its parameters are the measure's own `Params` model.
Run = Callable[[MeasureContext, Any], dict[str, Any]]


def _implementation(name: str) -> Run:
    """`run` of tasks/engine/measures/<name>.py, the computation of the declared measure."""
    module_name = f"{implementations.__name__}.{name}"
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise LookupError(
            f"measure {name!r} is declared (tasks/contract/measures/catalogue.py) without an "
            f"implementation: write run(ctx, params) in tasks/engine/measures/{name}.py"
        ) from None
    run: Run = module.run
    return run


#: Each declared measure's computation, in the catalogue's order.
IMPLEMENTATIONS: dict[str, Run] = {name: _implementation(name) for name in catalogue.measures()}


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
    return {m.name: Measure(m, IMPLEMENTATIONS[m.name]) for m in catalogue.MEASURES}


def get(name: str) -> Measure:
    catalogue.get(name)  # an unknown name: the catalogue's error, listing the known ones
    return measures()[name]


def validate_params(name: str, params: dict[str, Any] | None) -> MeasureParams:
    """Validate a measure's parameters against its model (raises KeyError/ValidationError)."""
    return catalogue.validate_params(name, params)

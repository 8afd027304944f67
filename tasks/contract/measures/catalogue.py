"""The catalogue of measures: each measure's name, one-line summary, parameter model and
capabilities, in one list.

The gateway validates a job's measures against it (names, defaults, bounds, and which
measures may run data-parallel) and lists it at GET /v1/measures; the engine joins each entry
to the function that computes it (tasks/engine/registry.py). Torch-free.

Adding a measure: declare it in a module of this package (its `NAME`, a docstring whose first
line is the summary, and `Params`, a pydantic model deriving from `MeasureParams`) and add it
to `MEASURES` below with its capabilities; then implement its `run(ctx, params)` in
tasks/engine/measures/<name>.py and list it in tasks/engine/registry.py. It then appears in
the job spec, the API docs and the SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

from tasks.contract.measures import (
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
from tasks.contract.measures.base import MeasureParams


@dataclass(frozen=True)
class Measure:
    """A measure as a client sees it: what it is called, what it measures, what it takes."""

    name: str
    summary: str
    params: type[MeasureParams]
    #: True when the measure sees the data only through the problem's loss, gradient and
    #: curvature products, which data-parallel processes sum (tasks.engine.distributed);
    #: False when it reads batches itself (perturbed accuracies, margins, sharpness chunks)
    #: and so runs in one process only.
    data_parallel: bool


def declared(module: ModuleType, *, data_parallel: bool) -> Measure:
    """The entry for a declaration module: its NAME, its docstring's first line, its Params."""
    doc = (module.__doc__ or "").strip()
    summary = doc.splitlines()[0] if doc else module.NAME
    return Measure(module.NAME, summary, module.Params, data_parallel=data_parallel)


MEASURES: tuple[Measure, ...] = (
    declared(lambda_max, data_parallel=True),
    declared(top_eigenvalues, data_parallel=True),
    declared(trace, data_parallel=True),
    declared(frobenius, data_parallel=True),
    declared(spectral_density, data_parallel=True),
    declared(adaptive_sharpness, data_parallel=False),
    declared(weight_norms, data_parallel=True),
    declared(output_margin, data_parallel=False),
    declared(pacbayes_flatness, data_parallel=False),
    declared(pacbayes_mag_flatness, data_parallel=False),
    declared(pacbayes_bound, data_parallel=False),
    declared(pacbayes_orig, data_parallel=False),
    declared(preconditioned_lambda_max, data_parallel=True),
)

#: The measures a data-parallel job may ask for.
DATA_PARALLEL_MEASURES = frozenset(m.name for m in MEASURES if m.data_parallel)


@cache
def measures() -> dict[str, Measure]:
    """The catalogue by name, in the order of `MEASURES`."""
    return {m.name: m for m in MEASURES}


def get(name: str) -> Measure:
    try:
        return measures()[name]
    except KeyError:
        known = ", ".join(sorted(measures()))
        raise KeyError(f"unknown measure {name!r}; known measures: {known}") from None


def validate_params(name: str, params: dict[str, Any] | None) -> MeasureParams:
    """Validate a measure's parameters against its model (raises KeyError/ValidationError)."""
    return get(name).params.model_validate(params or {})

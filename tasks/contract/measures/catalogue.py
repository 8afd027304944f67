"""The catalogue of measures: each measure's name, one-line summary, parameter model and
capabilities, in one list.

The gateway validates a job's measures against it (names, defaults, bounds, and which
measures may run data-parallel) and lists it at GET /v1/measures; the engine joins each entry
to the function that computes it (tasks/engine/registry.py). Torch-free.

Adding a measure: declare it in a module of this package (its `NAME`, a docstring whose first
line is the summary, and `Params`, a pydantic model deriving from `MeasureParams`) and add it
to `MEASURES` below with its capabilities; then implement its `run(ctx, params)` in
tasks/engine/measures/<name>.py (the registry finds it by the measure's name). It then appears
in the job spec, the API docs and the SDK. `MEASURES` is the one list of measures.
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


#: The measures that read batches themselves (perturbed accuracies, margins, sharpness
#: chunks), so a data-parallel job cannot split their data.
_ONE_PROCESS = frozenset(
    {
        adaptive_sharpness,
        output_margin,
        pacbayes_flatness,
        pacbayes_mag_flatness,
        pacbayes_bound,
        pacbayes_orig,
    }
)

#: Every measure, in the order GET /v1/measures lists them.
MEASURES: tuple[Measure, ...] = tuple(
    declared(module, data_parallel=module not in _ONE_PROCESS)
    for module in (
        lambda_max,
        top_eigenvalues,
        trace,
        frobenius,
        spectral_density,
        adaptive_sharpness,
        weight_norms,
        output_margin,
        pacbayes_flatness,
        pacbayes_mag_flatness,
        pacbayes_bound,
        pacbayes_orig,
        preconditioned_lambda_max,
    )
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

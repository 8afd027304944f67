"""The catalogue of measures: name → parameter model → function.

This module and the measure modules' top levels import no torch, so the gateway can validate
a job's measures (names, defaults, bounds) without loading it. Each measure module in
`tasks/engine/measures/` defines `Params` (a pydantic model deriving from `MeasureParams`) and
`run(ctx, params) -> dict`, importing the torch-side estimators inside `run`.

A measure module is a declaration: its `run` calls shared code for what several measures do
alike. `measures/base.py` holds the shared parameters, the result dict (`measured`) and an
estimator's keyword arguments from the parameters (`MeasureParams.options`); `measures/eigen.py`
the Lanczos measures' parameters and run; `tasks/engine/pacbayes.py` the pacbayes_* measures'.
Modules there that are not measures (base, eigen) are simply not listed below.

Adding a measure: write one file in `tasks/engine/measures/` and add its module name to
`MEASURE_MODULES` below. It then appears in the job spec, the API docs and the SDK.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel

MEASURE_MODULES: tuple[str, ...] = (
    "lambda_max",
    "top_eigenvalues",
    "trace",
    "frobenius",
    "spectral_density",
    "adaptive_sharpness",
    "weight_norms",
    "output_margin",
    "pacbayes_flatness",
    "pacbayes_mag_flatness",
    "pacbayes_bound",
    "pacbayes_orig",
    "preconditioned_lambda_max",
)


@dataclass(frozen=True)
class Measure:
    name: str
    summary: str
    params: type[BaseModel]
    module: str

    def runner(self) -> Callable[[Any, BaseModel], dict]:
        """The compute function (imports torch when called, never at registry load)."""
        return importlib.import_module(self.module).run


@cache
def measures() -> dict[str, Measure]:
    found: dict[str, Measure] = {}
    for short in MEASURE_MODULES:
        path = f"tasks.engine.measures.{short}"
        mod = importlib.import_module(path)
        name = getattr(mod, "NAME", short)
        summary = (mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else name
        found[name] = Measure(name=name, summary=summary, params=mod.Params, module=path)
    return found


def get(name: str) -> Measure:
    try:
        return measures()[name]
    except KeyError:
        known = ", ".join(sorted(measures()))
        raise KeyError(f"unknown measure {name!r}; known measures: {known}") from None


def validate_params(name: str, params: dict[str, Any] | None) -> BaseModel:
    """Validate a measure's parameters against its model (raises KeyError/ValidationError)."""
    return get(name).params.model_validate(params or {})

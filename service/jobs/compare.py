"""A finished job measured against a baseline job: per measure both values, their ratio, and
whether the difference is larger than the two results' error bars together.

A pipeline that gates on sharpness needs more than two numbers: a λmax 3% higher than last
week's is noise when each estimate is only good to 5%. Each result's error bar is its 95%
interval (`diagnostics.ci95`) when it has one, else value ± `diagnostics.error_estimate`; the
difference exceeds the error bars when the two bars do not overlap. The caveats say when the
two values are not measuring the same thing (other data, another model format, other measure
parameters) or one of them is not to be trusted (a budget stopped it before it converged).

Torch-free and free of the web framework's request objects: the router reads the records and
this module compares them.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field

from tasks.contract.spec import Job, MeasureResult

ErrorBasis = Literal["interval", "error_estimate", "none"]


class MeasureComparison(BaseModel):
    """One measure present in both jobs with a number as its value."""

    measure: str = Field(description="The measure's name.")
    value: float = Field(description="The job's value.")
    baseline_value: float = Field(description="The baseline job's value.")
    difference: float = Field(description="value − baseline_value.")
    ratio: float | None = Field(
        default=None, description="value / baseline_value; null when the baseline value is 0."
    )
    bounds: list[float] | None = Field(
        default=None, description="The job's error bar [low, high], when it has one."
    )
    baseline_bounds: list[float] | None = Field(
        default=None, description="The baseline's error bar [low, high], when it has one."
    )
    error_basis: ErrorBasis = Field(
        description="Where the job's error bar comes from: its 95% interval (diagnostics.ci95), "
        "value ± diagnostics.error_estimate, or none."
    )
    baseline_error_basis: ErrorBasis = Field(description="The same for the baseline.")
    exceeds_error_bars: bool | None = Field(
        default=None,
        description="True when the two error bars do not overlap (a result without one counts "
        "as its point value); null when neither result has an error bar.",
    )
    caveats: list[str] = Field(
        default_factory=list,
        description="Why this comparison may mislead: other measure parameters, a result that "
        "did not converge, a missing error bar.",
    )


class Comparison(BaseModel):
    """`GET /v1/jobs/{id}/compare?baseline={id}`: the job against the baseline."""

    job: str = Field(description="Id of the job compared.")
    baseline: str = Field(description="Id of the baseline job.")
    measures: list[MeasureComparison] = Field(
        description="Each measure both jobs have with a number as its value, in the job's order."
    )
    not_compared: dict[str, str] = Field(
        default_factory=dict,
        description="Measures of either job left out, each with the reason (only in one job, "
        "or a value that is not a number).",
    )
    caveats: list[str] = Field(
        default_factory=list,
        description="What differs between the two jobs as a whole: the dataset, the model "
        "format, the loss, the mode.",
    )


def compare(
    job: Job,
    baseline: Job,
    model_format: str | None = None,
    baseline_model_format: str | None = None,
) -> Comparison:
    """Compare two finished jobs. `model_format`s (from the uploads' records) add a caveat
    when they differ; None when unknown (the model was deleted)."""
    measures: list[MeasureComparison] = []
    not_compared: dict[str, str] = {}
    for name, result in job.results.items():
        base = baseline.results.get(name)
        if base is None:
            not_compared[name] = "only in the job"
        elif _number(result.value) is None or _number(base.value) is None:
            not_compared[name] = "its value is not a number"
        else:
            params = _params(job, name), _params(baseline, name)
            measures.append(compare_results(name, result, base, *params))
    for name in baseline.results:
        if name not in job.results:
            not_compared[name] = "only in the baseline"
    caveats = job_caveats(job, baseline, model_format, baseline_model_format)
    return Comparison(
        job=job.id,
        baseline=baseline.id,
        measures=measures,
        not_compared=not_compared,
        caveats=caveats,
    )


def compare_results(
    name: str,
    result: MeasureResult,
    base: MeasureResult,
    params: dict[str, Any] | None = None,
    base_params: dict[str, Any] | None = None,
) -> MeasureComparison:
    """One measure's comparison; both values must be numbers."""
    value, base_value = float(result.value), float(base.value)
    (bounds, basis), (base_bounds, base_basis) = error_bar(result), error_bar(base)
    caveats = _result_caveats(result, base, params or {}, base_params or {})
    if bounds is None and base_bounds is None:
        exceeds = None
        caveats.append("neither result has an error bar: the difference cannot be judged")
    else:
        low, high = bounds or [value, value]
        base_low, base_high = base_bounds or [base_value, base_value]
        exceeds = low > base_high or high < base_low
        for which, got in (("the job", bounds), ("the baseline", base_bounds)):
            if got is None:
                caveats.append(f"{which} has no error bar: its value counts as exact")
    return MeasureComparison(
        measure=name,
        value=value,
        baseline_value=base_value,
        difference=value - base_value,
        ratio=value / base_value if base_value != 0 else None,
        bounds=bounds,
        baseline_bounds=base_bounds,
        error_basis=basis,
        baseline_error_basis=base_basis,
        exceeds_error_bars=exceeds,
        caveats=caveats,
    )


def error_bar(result: MeasureResult) -> tuple[list[float] | None, ErrorBasis]:
    """The result's [low, high] and where it comes from: the 95% interval when present, else
    value ± error_estimate, else none."""
    ci = result.diagnostics.get("ci95")
    if isinstance(ci, list | tuple) and len(ci) == 2:
        low, high = _number(ci[0]), _number(ci[1])
        if low is not None and high is not None:
            return [low, high], "interval"
    estimate = _number(result.diagnostics.get("error_estimate"))
    value = _number(result.value)
    if estimate is not None and value is not None:
        return [value - abs(estimate), value + abs(estimate)], "error_estimate"
    return None, "none"


def job_caveats(
    job: Job, baseline: Job, model_format: str | None, baseline_model_format: str | None
) -> list[str]:
    """What differs between the two jobs' specs in a way that changes every measure."""
    caveats = []
    data, base_data = _dataset(job), _dataset(baseline)
    if data != base_data:
        caveats.append(f"different data: the job measured {data}, the baseline {base_data}")
    if model_format and baseline_model_format and model_format != baseline_model_format:
        caveats.append(
            f"different model format: the job's model is {model_format}, the baseline's "
            f"{baseline_model_format}"
        )
    for field in ("loss", "mode", "output_key", "class_dim"):
        mine, theirs = getattr(job.spec, field), getattr(baseline.spec, field)
        if mine != theirs:
            caveats.append(f"different {field}: {mine!r} in the job, {theirs!r} in the baseline")
    return caveats


def _result_caveats(
    result: MeasureResult,
    base: MeasureResult,
    params: dict[str, Any],
    base_params: dict[str, Any],
) -> list[str]:
    caveats = []
    changed = sorted(
        k for k in params.keys() | base_params.keys() if params.get(k) != base_params.get(k)
    )
    if changed:
        pairs = ", ".join(f"{k} {params.get(k)!r} vs {base_params.get(k)!r}" for k in changed)
        caveats.append(f"different measure parameters: {pairs}")
    for which, r in (("the job's", result), ("the baseline's", base)):
        if r.converged is False:
            why = r.diagnostics.get("limited_by")
            caveats.append(f"{which} result did not converge" + (f" ({why})" if why else ""))
    return caveats


def _params(job: Job, name: str) -> dict[str, Any]:
    for m in job.spec.measures:
        if m.name == name:
            return m.params
    return {}


def _dataset(job: Job) -> str:
    ref = job.spec.dataset
    where = f"dataset {ref.id}" if ref.id else f"URI {ref.uri}"
    if ref.max_samples is not None:
        where += f" (first {ref.max_samples} examples)"
    return where


def _number(value: Any) -> float | None:
    """A finite real number as float; None for anything else (bool, list, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None

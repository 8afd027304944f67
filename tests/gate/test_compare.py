"""The comparison of two job records (service.jobs.compare): ratios, error bars from intervals
or error estimates, and the caveats. Records are built as the worker writes them."""

from __future__ import annotations

from typing import Any

from service.jobs.compare import compare, compare_results, error_bar
from tasks.contract.spec import Job, MeasureResult

MODEL, DATA, OTHER_DATA = "a" * 64, "b" * 64, "c" * 64


def job(id: str, results: dict[str, dict[str, Any]], dataset: str = DATA, **params: Any) -> Job:
    measures = [{"name": n, "params": params.get(n, {})} for n in results]
    return Job.model_validate(
        {
            "id": id,
            "status": "succeeded",
            "queue": "cpu",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "spec": {"model": MODEL, "dataset": {"id": dataset}, "measures": measures},
            "results": results,
        }
    )


def lam(value: float, err: float, converged: bool = True) -> dict[str, Any]:
    return {"value": value, "converged": converged, "diagnostics": {"error_estimate": err}}


def trace(value: float, low: float, high: float) -> dict[str, Any]:
    return {"value": value, "converged": True, "diagnostics": {"ci95": [low, high]}}


def test_ratio_and_error_bars_from_error_estimates() -> None:
    got = compare(
        job("1" * 32, {"lambda_max": lam(12.0, 0.5)}), job("2" * 32, {"lambda_max": lam(10.0, 0.5)})
    )
    (m,) = got.measures
    assert (m.value, m.baseline_value, m.difference, m.ratio) == (12.0, 10.0, 2.0, 1.2)
    assert m.bounds == [11.5, 12.5] and m.baseline_bounds == [9.5, 10.5]
    assert m.error_basis == m.baseline_error_basis == "error_estimate"
    assert m.exceeds_error_bars is True and m.caveats == [] and got.caveats == []


def test_overlapping_intervals_do_not_exceed() -> None:
    a, b = (
        job("1" * 32, {"trace": trace(105, 95, 115)}),
        job("2" * 32, {"trace": trace(100, 90, 110)}),
    )
    (m,) = compare(a, b).measures
    assert m.error_basis == "interval" and m.exceeds_error_bars is False
    assert m.ratio == 1.05


def test_interval_preferred_to_error_estimate() -> None:
    r = MeasureResult(value=5.0, diagnostics={"ci95": [4.0, 7.0], "error_estimate": 0.1})
    assert error_bar(r) == ([4.0, 7.0], "interval")
    assert error_bar(MeasureResult(value=5.0)) == (None, "none")


def test_missing_error_bars_are_said() -> None:
    plain = MeasureResult(value=3.0)
    m = compare_results("weight_norms", plain, MeasureResult(value=2.0))
    assert m.exceeds_error_bars is None
    assert any("neither result has an error bar" in c for c in m.caveats)
    m = compare_results("lambda_max", MeasureResult(**lam(3.0, 0.1)), MeasureResult(value=2.0))
    assert m.exceeds_error_bars is True
    assert any("baseline has no error bar" in c for c in m.caveats)
    assert compare_results("x", plain, MeasureResult(value=0.0)).ratio is None


def test_caveats_for_data_format_params_and_convergence() -> None:
    a = job("1" * 32, {"lambda_max": lam(10.0, 1.0, converged=False)}, lambda_max={"max_iter": 50})
    b = job("2" * 32, {"lambda_max": lam(10.0, 1.0)}, dataset=OTHER_DATA)
    got = compare(a, b, "pt2", "torchscript")
    assert any(c.startswith("different data") and OTHER_DATA in c for c in got.caveats)
    assert any("different model format" in c and "torchscript" in c for c in got.caveats)
    (m,) = got.measures
    assert any("different measure parameters" in c and "max_iter" in c for c in m.caveats)
    assert "the job's result did not converge" in m.caveats


def test_measures_not_in_both_or_not_numbers_are_listed() -> None:
    top = {"value": [3.0, 2.0], "diagnostics": {}}
    a = job(
        "1" * 32, {"lambda_max": lam(1.0, 0.1), "top_eigenvalues": top, "trace": trace(1, 0, 2)}
    )
    b = job(
        "2" * 32, {"lambda_max": lam(1.0, 0.1), "top_eigenvalues": top, "frobenius": trace(1, 0, 2)}
    )
    got = compare(a, b)
    assert [m.measure for m in got.measures] == ["lambda_max"]
    assert got.not_compared == {
        "top_eigenvalues": "its value is not a number",
        "trace": "only in the job",
        "frobenius": "only in the baseline",
    }

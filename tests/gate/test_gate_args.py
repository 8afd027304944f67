"""The command line's gate without a service: how limits are read (and refused before anything
is uploaded), and the one line a broken limit prints, from real job and comparison records."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from sharpness_client import cli
from sharpness_client._gate import EXIT_GATE, Limit, _above, _increase, from_args
from sharpness_client.types import Comparison, Job


def args(*gate: str, measures: tuple[str, ...] = ("lambda_max",)) -> argparse.Namespace:
    argv = ["measure", "m.pt2", "--data", "d.npz", *gate]
    for m in measures:
        argv += ["--measure", m]
    return cli._parser().parse_args(argv)


def test_limits_read_from_the_command_line() -> None:
    both = ("lambda_max", "trace")
    limits = ("--fail-above", "lambda_max=50", "--max-increase", "trace=20%")
    gate = from_args(args(*limits, "--baseline", "a" * 32, measures=both))
    assert gate.fail_above == [Limit("lambda_max", 50.0)]
    assert gate.max_increase == [Limit("trace", 20.0, percent=True)]
    assert gate.baseline == "a" * 32 and gate.active
    assert Limit("trace", 20.0, percent=True).increase_allowed(-10.0) == 2.0
    assert Limit("trace", 3.0).increase_allowed(100.0) == 3.0


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        (("--fail-above", "lambda_max=50%"), "expected MEASURE=NUMBER"),
        (("--fail-above", "lambda_max"), "expected MEASURE=NUMBER"),
        (("--max-increase", "lambda_max=x%", "--baseline", "a" * 32), "MEASURE=N or MEASURE=N%"),
        (("--max-increase", "lambda_max=5"), "--max-increase and --baseline go together"),
        (("--baseline", "a" * 32), "--max-increase and --baseline go together"),
        (("--fail-above", "trace=1"), "add --measure trace"),
        (("--fail-above", "lambda_max=1", "--no-wait"), "drop --no-wait"),
        (("--mlflow", "--no-wait"), "drop --no-wait"),
    ],
)
def test_malformed_gates_are_refused(gate: tuple[str, ...], message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        from_args(args(*gate))


def test_a_malformed_gate_exits_64_before_any_upload(capsys: pytest.CaptureFixture[str]) -> None:
    # the files do not exist and no service runs: the gate is read first
    argv = ["measure", "missing.pt2", "--data", "missing.npz", "--measure", "lambda_max"]
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--fail-above", "lambda_max=big"])
    assert e.value.code == cli.EXIT_USAGE and EXIT_GATE == 6
    assert "--fail-above 'lambda_max=big'" in capsys.readouterr().err


def job(results: dict[str, Any]) -> Job:
    return Job.model_validate(
        {
            "id": "1" * 32,
            "status": "succeeded",
            "queue": "cpu",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "spec": {"model": "a" * 64, "dataset": {"id": "b" * 64}, "measures": []},
            "results": results,
        }
    )


def test_the_line_for_a_value_above_its_limit() -> None:
    found = job({"lambda_max": {"value": 61.25}, "top_eigenvalues": {"value": [3.0, 2.0]}})
    assert _above(Limit("lambda_max", 50.0), found) == "lambda_max 61.25 > 50 (--fail-above)"
    assert _above(Limit("lambda_max", 70.0), found) is None
    assert "not a number" in str(_above(Limit("top_eigenvalues", 1.0), found))
    assert "has no result" in str(_above(Limit("trace", 1.0), found))


def comparison(value: float, base: float, exceeds: bool | None) -> Comparison:
    return Comparison.model_validate(
        {
            "job": "1" * 32,
            "baseline": "2" * 32,
            "measures": [
                {
                    "measure": "lambda_max",
                    "value": value,
                    "baseline_value": base,
                    "difference": value - base,
                    "ratio": value / base,
                    "error_basis": "error_estimate",
                    "baseline_error_basis": "error_estimate",
                    "exceeds_error_bars": exceeds,
                }
            ],
            "not_compared": {"trace": "only in the job"},
        }
    )


def test_the_line_for_an_increase_over_the_baseline() -> None:
    line = _increase(Limit("lambda_max", 20.0, percent=True), comparison(60.0, 40.0, True))
    assert line == "lambda_max 60 vs baseline 40 (+50.0% > 20% allowed; beyond error bars)"
    line = _increase(Limit("lambda_max", 5.0), comparison(46.0, 40.0, False))
    assert line == "lambda_max 46 vs baseline 40 (+15.0% > 5 allowed; within error bars)"
    assert _increase(Limit("lambda_max", 50.0, percent=True), comparison(60, 40, True)) is None
    missing = _increase(Limit("trace", 1.0), comparison(60.0, 40.0, True))
    assert missing == f"trace not compared with baseline {'2' * 32} (only in the job)"

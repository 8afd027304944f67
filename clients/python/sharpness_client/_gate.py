"""`sharpness measure ... --fail-above MEASURE=LIMIT --baseline JOB --max-increase MEASURE=N%`:
a pipeline step that fails on a sharpness regression, with exit code 6 and one line that says
why, and `--mlflow`, which logs the finished job to the active MLflow run.

The limits are read before anything is uploaded, so a misspelt one costs no measuring. Each
gated measure must be one the command measures. `--max-increase` takes a percentage of the
baseline's value (`20%`) or an absolute increase (`5`); the comparison comes from the service
(GET /v1/jobs/{id}/compare), and the line says whether the increase is beyond the two results'
error bars or within them (then it may be noise: raise the measure's budget to tell).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field

from sharpness_client.client import Client
from sharpness_client.mlflow_logging import log_to_mlflow
from sharpness_client.types import Comparison, Job, JobStatus

EXIT_GATE = 6

_LIMIT = re.compile(r"^(?P<measure>[A-Za-z0-9_]+)=(?P<number>[-+0-9.eE]+)(?P<percent>%?)$")


@dataclass(frozen=True)
class Limit:
    """One `MEASURE=NUMBER` (or `MEASURE=NUMBER%`) of the command line."""

    measure: str
    number: float
    percent: bool = False

    def increase_allowed(self, baseline: float) -> float:
        return abs(baseline) * self.number / 100 if self.percent else self.number

    def __str__(self) -> str:
        return f"{self.number:g}%" if self.percent else f"{self.number:g}"


@dataclass
class Gate:
    """The limits a finished job must meet, and the baseline job of the relative ones."""

    fail_above: list[Limit] = field(default_factory=list)
    max_increase: list[Limit] = field(default_factory=list)
    baseline: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.fail_above or self.max_increase)

    def failures(self, client: Client, job: Job) -> list[str]:
        """Why the job fails the gate, one phrase per limit broken; empty when it passes."""
        broken = [_above(limit, job) for limit in self.fail_above]
        if self.max_increase and self.baseline:
            comparison = client.jobs.compare(job.id, baseline=self.baseline)
            broken += [_increase(limit, comparison) for limit in self.max_increase]
        return [b for b in broken if b]


def add_options(p: argparse.ArgumentParser) -> None:
    """The gate's and MLflow's options of `sharpness measure`."""
    g = p.add_argument_group(
        "gate (exit 6 and one line on stderr when a limit is broken)",
    )
    g.add_argument(
        "--fail-above",
        action="append",
        default=[],
        metavar="MEASURE=LIMIT",
        help="fail when the measure's value is above LIMIT, e.g. lambda_max=50 (repeat)",
    )
    g.add_argument("--baseline", metavar="JOB", help="the job --max-increase compares with")
    g.add_argument(
        "--max-increase",
        action="append",
        default=[],
        metavar="MEASURE=N[%]",
        help="with --baseline: fail when the measure rose more than N percent of the "
        "baseline's value (lambda_max=20%%) or more than N (lambda_max=5) (repeat)",
    )
    p.add_argument(
        "--mlflow",
        action="store_true",
        help="log the finished job to the active MLflow run (MLFLOW_TRACKING_URI, "
        "MLFLOW_RUN_ID; needs sharpness-client[mlflow])",
    )


def from_args(args: argparse.Namespace) -> Gate:
    """The gate of the command line; ArgumentTypeError (usage, exit 64) when it is malformed."""
    gate = Gate(
        fail_above=[_limit(t, "--fail-above", percent_ok=False) for t in args.fail_above],
        max_increase=[_limit(t, "--max-increase", percent_ok=True) for t in args.max_increase],
        baseline=args.baseline,
    )
    if bool(gate.max_increase) != bool(gate.baseline):
        raise argparse.ArgumentTypeError("--max-increase and --baseline go together")
    measured = set(args.measure)
    for limit in gate.fail_above + gate.max_increase:
        if limit.measure not in measured:
            raise argparse.ArgumentTypeError(
                f"the gate names {limit.measure}, which is not measured: add --measure "
                f"{limit.measure}"
            )
    if (gate.active or args.mlflow) and not args.wait:
        raise argparse.ArgumentTypeError(
            "the gate and --mlflow need the finished job: drop --no-wait"
        )
    return gate


def after(client: Client, args: argparse.Namespace, gate: Gate, job: Job, code: int) -> int:
    """Log to MLflow (--mlflow) and apply the gate to a job that succeeded: the exit code,
    EXIT_GATE with one line on stderr when a limit is broken, else `code` unchanged."""
    if job.status != JobStatus.succeeded:
        return code
    if args.mlflow:
        run_id = log_to_mlflow(job, client)
        print(f"sharpness: logged job {job.id} to MLflow run {run_id}", file=sys.stderr)
    if not gate.active:
        return code
    broken = gate.failures(client, job)
    if broken:
        print(f"sharpness: gate failed: {'; '.join(broken)}", file=sys.stderr)
        return EXIT_GATE
    print(f"sharpness: gate passed ({_summary(gate)})", file=sys.stderr)
    return code


def _limit(text: str, option: str, percent_ok: bool) -> Limit:
    m = _LIMIT.match(text.strip())
    try:
        number = float(m.group("number")) if m else None
    except ValueError:
        number = None
    if m is None or number is None or (m.group("percent") and not percent_ok):
        shape = "MEASURE=N or MEASURE=N%" if percent_ok else "MEASURE=NUMBER"
        raise argparse.ArgumentTypeError(f"{option} {text!r}: expected {shape}")
    return Limit(m.group("measure"), number, bool(m.group("percent")))


def _above(limit: Limit, job: Job) -> str | None:
    result = job.results.get(limit.measure)
    if result is None:
        return f"{limit.measure} has no result (--fail-above {limit.measure}={limit})"
    value = result.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{limit.measure}'s value is not a number (--fail-above {limit.measure}={limit})"
    if value > limit.number:
        return f"{limit.measure} {value:.6g} > {limit} (--fail-above)"
    return None


def _increase(limit: Limit, comparison: Comparison) -> str | None:
    m = comparison.measure(limit.measure)
    if m is None:
        why = comparison.not_compared.get(limit.measure, "not in both jobs")
        return f"{limit.measure} not compared with baseline {comparison.baseline} ({why})"
    allowed = limit.increase_allowed(m.baseline_value)
    if m.difference <= allowed:
        return None
    rise = (
        f"+{100 * m.difference / abs(m.baseline_value):.1f}%"
        if m.baseline_value
        else f"+{m.difference:.6g}"
    )
    noise = {True: "beyond", False: "within", None: "no"}[m.exceeds_error_bars]
    return (
        f"{limit.measure} {m.value:.6g} vs baseline {m.baseline_value:.6g} "
        f"({rise} > {limit} allowed; {noise} error bars)"
    )


def _summary(gate: Gate) -> str:
    parts = [f"{x.measure} ≤ {x}" for x in gate.fail_above]
    parts += [f"{x.measure} +{x} over {gate.baseline}" for x in gate.max_increase]
    return ", ".join(parts)

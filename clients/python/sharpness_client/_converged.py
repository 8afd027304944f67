"""Which results of a finished run did not converge, which budget stopped each and what helps;
one reading for the CLI's notices and exit code and the SDK's NotConvergedWarning.

The service's contract: a result is `converged` when its error estimate is within the requested
accuracy (`diagnostics.limited_by` "tolerance") or within a small multiple of the rounding
level of the model's dtype ("float32 rounding", ...). Only "iteration budget", "basis budget"
and "time" mean a budget stopped the run first, and only then is `converged` false. A record
without `limited_by` (an older service) is read by `converged` alone.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from sharpness_client.errors import NotConvergedError, NotConvergedWarning
from sharpness_client.types import Job, Trajectory

TOLERANCE = "tolerance"
BUDGETS = ("iteration budget", "basis budget", "time")
# measures whose iteration budget is a number of products (probes), not Lanczos steps
PROBE_BUDGET = {"trace": "num_hvps", "frobenius": "num_hvps"}
PACKAGE = str(Path(__file__).resolve().parent)


@dataclass(frozen=True)
class Miss:
    """One result that did not converge: `where` it is (`"lambda_max"`, `"trace[0]"` for a
    layer, `"checkpoint 2"`), its measure, the budget that stopped it, what it reached."""

    where: str
    measure: str
    limited_by: str | None
    detail: str
    fix: str

    def reason(self) -> str:
        """Why, and what helps: "stopped by its iteration budget ...; raise ..."."""
        if self.limited_by:
            why = f"stopped by its {_budget(self.limited_by)} before the requested accuracy"
        else:
            why = "did not reach the requested accuracy"
        return f"{why}; {self.fix}"

    def text(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.where}{detail}: {self.reason()}"


def _budget(by: str) -> str:
    """A budget as a phrase: "iteration budget", "basis budget", "time budget"."""
    return "time budget" if by == "time" else by


def limited_by(result: Any) -> str | None:
    """A result's `diagnostics.limited_by` (a MeasureResult, a per-layer dict or a trajectory
    point), None where the service did not say."""
    if isinstance(result, dict):
        diag = result.get("diagnostics") or {}
        value = diag.get("limited_by", result.get("limited_by"))
    else:  # MeasureResult.limited_by reads its diagnostics; a point carries its own
        value = getattr(result, "limited_by", None)
    return value if isinstance(value, str) else None


def converged_note(result: Any) -> str | None:
    """For a converged result limited by rounding: what that means, else None."""
    by = limited_by(result)
    converged = result.get("converged") if isinstance(result, dict) else result.converged
    if converged is True and by and by.endswith(" rounding"):
        dtype = by.removesuffix(" rounding")
        return (
            f"converged to {by}: as accurate as {dtype} products allow; a tighter tol "
            "cannot be certified"
        )
    return None


def negative_note(name: str, result: Any) -> str | None:
    """For top_eigenvalues / lambda_max with `most_negative`: a most negative eigenvalue a
    budget stopped (reported apart; the top eigenvalues' `converged` does not cover it)."""
    diag = (result.get("diagnostics") if isinstance(result, dict) else result.diagnostics) or {}
    if diag.get("most_negative_converged") is not False:
        return None
    by = diag.get("most_negative_limited_by")
    why = f"stopped by its {_budget(by)}" if isinstance(by, str) else "did not converge"
    return f"the most negative eigenvalue {why}; raise {name}.max_iter for it"


def _param(params: dict[str, Any], name: str, measure: str) -> str:
    now = params.get(name)
    return f"{measure}.{name}" + (f" (now {now})" if now is not None else "")


def fix(measure: str, by: str | None, params: dict[str, Any], *, trajectory: bool = False) -> str:
    """What helps against the budget `by` for `measure` (its parameters as sent: `params`)."""
    if trajectory:
        tol = params.get("tol")
        return f"raise the trajectory's max_iter (now {params.get('max_iter')}) or its tol" + (
            f" (now {tol})" if tol is not None else ""
        )
    if by == "basis budget":
        return f"raise {_param(params, 'max_basis', measure)} (more memory per step)"
    if by == "time":
        return (
            "give the job more time (the worker's SHARPNESS_SOFT_TIME_LIMIT_S) or measure "
            f"fewer examples (max_samples); {measure} ran out of time"
        )
    steps = PROBE_BUDGET.get(measure, "max_iter")
    loosen = "rtol" if steps == "num_hvps" else "tol"
    text = f"raise {_param(params, steps, measure)} or loosen {measure}.{loosen}"
    return text if by else f"{text} (or the budget it names)"


def _detail(r: dict[str, Any]) -> str:
    diag = r.get("diagnostics") or {}
    bound = diag.get("residual_bound", diag.get("residual_bounds"))
    its = diag.get("iterations")
    parts = []
    if bound is not None:
        parts.append(f"residual bound {number(bound)}")
    if its is not None:
        parts.append(f"{its} iterations")
    return ", ".join(parts)


def number(value: Any) -> Any:
    """A figure as the CLI and the notices print it (6 significant digits, 4 list items)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        shown = ", ".join(str(number(v)) for v in value[:4])
        return f"[{shown}{', ...' if len(value) > 4 else ''}]"
    return value


def misses(run: Job | Trajectory) -> list[Miss]:
    """Every result of `run` whose `converged` is false: measures, their per-layer blocks, and
    a trajectory's points."""
    out: list[Miss] = []
    if isinstance(run, Trajectory):
        params = {"max_iter": run.spec.max_iter, "tol": run.spec.tol}
        for p in run.points:
            if p.converged is False:
                where = f"checkpoint {p.index}" + (
                    f" (step {p.step})" if p.step is not None else ""
                )
                detail = f"residual bounds {number(p.residual_bounds)}, {p.iterations} iterations"
                by = limited_by(p)
                out.append(
                    Miss(where, "trajectory", by, detail, fix("", by, params, trajectory=True))
                )
        return out
    sent = {m.name: m.params for m in run.spec.measures}
    for name, result in run.results.items():
        params = sent.get(name, {})
        r = result.model_dump()
        if r.get("converged") is False:
            by = limited_by(r)
            out.append(Miss(name, name, by, _detail(r), fix(name, by, params)))
        for layer, lr in (r.get("per_layer") or {}).items():
            if isinstance(lr, dict) and lr.get("converged") is False:
                by = limited_by(lr)
                out.append(Miss(f"{name}[{layer}]", name, by, _detail(lr), fix(name, by, params)))
    return out


def _message(run: Job | Trajectory, found: list[Miss]) -> str:
    noun = "trajectory" if isinstance(run, Trajectory) else "job"
    head = f"{noun} {run.id}: {len(found)} result(s) did not converge (values returned, "
    head += "not to the requested accuracy): "
    return head + "; ".join(m.text() for m in found)


def _stacklevel() -> int:
    """The stack level of the first frame outside this package, so a warning points at the
    caller's `measure(...)` or `wait(...)` line, sync or async."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def check(run: Any, raise_on_not_converged: bool = False) -> None:
    """Warn (NotConvergedWarning), or raise NotConvergedError, when a finished run holds a
    result that did not converge; say nothing for converged ones."""
    if not isinstance(run, Job | Trajectory):
        return
    found = misses(run)
    if not found:
        return
    message = _message(run, found)
    names = [m.where for m in found]
    if raise_on_not_converged:
        raise NotConvergedError(message, run, names, {m.where: m.limited_by for m in found})
    warnings.warn(NotConvergedWarning(message, run, names), stacklevel=_stacklevel())

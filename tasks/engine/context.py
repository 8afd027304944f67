"""What a measure gets besides its parameters: the problem, progress and cancellation hooks.

The worker passes callbacks that write progress to the job record and read a cancel flag;
a notebook passes nothing. Estimators call `ctx.step(...)` once per iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.engine.problem import HessianProblem


class Cancelled(Exception):
    """Raised between iterations when the caller asked to stop."""


@dataclass
class MeasureContext:
    problem: HessianProblem
    on_progress: Callable[[dict[str, Any]], None] | None = None
    should_cancel: Callable[[], bool] | None = None
    hvp_backend: str = "auto"
    label: str = ""
    _last: dict[str, Any] = field(default_factory=dict)

    def step(self, iteration: int, estimate: Any = None, **extra: Any) -> None:
        """Report one iteration and stop here if cancellation was requested."""
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("cancelled by request")
        if self.on_progress is not None:
            info = {"iteration": iteration, "estimate": estimate, **extra}
            if self.label:
                info["block"] = self.label
            self.on_progress(info)

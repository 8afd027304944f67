"""Cancellation between batches: `checkpoint()` and the `should_cancel` it asks.

A measure is stopped at its next `ctx.step` (tasks.engine.context) and, finer, at the next
`checkpoint()`, which the problem and the operators call before each batch's forward pass and
each backward pass through a gradient graph (tasks.engine.problem, operator, ggn). The runner
enters `cancellable(should_cancel)` around each measure, so the check is the measure caller's
own; outside a measure `checkpoint()` does nothing. Torch's kernels are not interruptible, so
a cancel waits for at most one batch's forward or backward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class Cancelled(Exception):
    """Raised between iterations (or between batches) when the caller asked to stop."""


# the should_cancel of the measure running in this thread, asked between batches
_should_cancel: ContextVar[Callable[[], bool] | None] = ContextVar(
    "sharpness_should_cancel", default=None
)


def checkpoint() -> None:
    """Raise Cancelled when the running measure's caller asked to stop (whatever else its
    `should_cancel` raises propagates too). Called by the engine before every batch's forward
    pass and every backward pass through a kept graph; free when nothing is running."""
    should_cancel = _should_cancel.get()
    if should_cancel is not None and should_cancel():
        raise Cancelled("cancelled by request")


@contextmanager
def cancellable(should_cancel: Callable[[], bool] | None) -> Iterator[None]:
    """Make `checkpoint()` ask `should_cancel` while the block runs (None: never)."""
    token = _should_cancel.set(should_cancel)
    try:
        yield
    finally:
        _should_cancel.reset(token)

"""What can end a run early, in two families, and the problem each is recorded as.

Problems (`RunError` and its kinds) end a run as failed with the RFC 9457 problem they carry:
its title, detail, HTTP status and problem type (tasks.contract.problem_types). The detail names
the file, field or parameter at fault; `at(where, e)` prefixes the field of the request that
led there (`checkpoints[2].model: ...`).

- `LoadError`: an uploaded model, dataset or optimizer state cannot be read, or does not fit
  the model or the loss (422: the client's input is at fault);
- `DeviceUnavailable`: this worker lacks the device the run asks for (503);
- `CheckpointMismatch`: a trajectory's checkpoints cannot be compared;
- `RunError` itself: any other request this worker cannot honour.

Stops (`RunStop`) are not the input's fault: the worker drains, another worker took the run
over, or the soft time limit passed. tasks.worker.run decides what each one writes.

`problem_of` turns whatever a run raised into the problem its record keeps; any other exception
is the run's own failure (500 `job-failed`, 501 `not-implemented`), or `out-of-memory` (the
engine's InsufficientMemory, planned before the run; or a failed allocation), naming the memory
needed and the memory there was.
"""

from __future__ import annotations

import os
import re
from typing import TypeVar

from celery.exceptions import SoftTimeLimitExceeded

from tasks.contract import problem_types
from tasks.contract.spec import Problem


class RunError(Exception):
    """A run failed with a problem the client is told as is; `status` 422 (the default) means
    the client's input is at fault."""

    def __init__(
        self, title: str, detail: str, status: int = 422, kind: str = "invalid-input"
    ) -> None:
        super().__init__(detail)
        self.title = title
        self.detail = detail
        self.status = status
        self.kind = kind
        self.type = problem_types.uri(kind)


class LoadError(RunError):
    """The model or data cannot be used: unreadable, unsafe, or not fitting each other."""


class DeviceUnavailable(RunError):
    """The run needs a device (CUDA, or more GPUs) this worker does not see."""

    def __init__(
        self, title: str, detail: str, status: int = 503, kind: str = "device-unavailable"
    ) -> None:
        super().__init__(title=title, detail=detail, status=status, kind=kind)


class CheckpointMismatch(RunError):
    """A trajectory's checkpoints differ in parameter names or shapes."""

    def __init__(
        self, title: str, detail: str, status: int = 422, kind: str = "checkpoint-mismatch"
    ) -> None:
        super().__init__(title=title, detail=detail, status=status, kind=kind)


E = TypeVar("E", bound=RunError)


def at(where: str, e: E) -> E:
    """The same problem, of the same kind, its detail prefixed with the field at fault."""
    return type(e)(e.title, f"{where}: {e.detail}", e.status, e.kind)


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, without terminal colours, for a detail."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


class RunStop(Exception):
    """The run stops for a reason outside its input; see the subclasses."""


class TimeLimit(RunStop):
    """The run passed the soft time limit."""


class Draining(RunStop):
    """The worker is shutting down: hand the run back to the queue."""


class LockLost(RunStop):
    """Another worker took the run over (this one was paused past its lock): stop, write
    nothing."""


#: what the run's own stops raise, Celery's soft time limit in a prefork child included: a
#: step that reads an upload lets them through (never "unreadable", never the input's fault)
STOPS: tuple[type[BaseException], ...] = (RunStop, SoftTimeLimitExceeded)


def problem(title: str, detail: str, status: int = 500, kind: str = "job-failed") -> Problem:
    """A problem of the run itself (not of its input): a 500 `job-failed` unless told."""
    return Problem(type=problem_types.uri(kind), title=title, status=status, detail=detail)


def problem_of(e: Exception, kind: str, where: str, kept: str, soft_limit_s: int) -> Problem:
    """The problem a run's exception is recorded as; `where` names the step at fault."""
    if isinstance(e, RunError):
        return Problem(type=e.type, title=e.title, status=e.status, detail=e.detail)
    if isinstance(e, TimeLimit | SoftTimeLimitExceeded):
        return problem(
            "Time limit exceeded",
            f"the {kind} ran past the soft time limit of {soft_limit_s} s "
            f"(SHARPNESS_SOFT_TIME_LIMIT_S) in {where or 'its preparation'}; {kept}",
            kind="time-limit",
        )
    if isinstance(e, NotImplementedError):
        return problem(
            "Measure not implemented",
            f"{where} is not implemented by this worker ({e})",
            status=501,
            kind="not-implemented",
        )
    where = where or f"preparing the {kind}"
    if _out_of_memory(e):
        return memory_problem(e, where)
    title, detail = f"{kind.capitalize()} failed", f"{where}: {type(e).__name__}: {e}"
    return problem(title, detail, kind="job-failed")


def _out_of_memory(e: Exception) -> bool:
    """A MemoryError (the engine's InsufficientMemory included), torch's OutOfMemoryError, or
    an allocator's RuntimeError saying so."""
    return (
        isinstance(e, MemoryError)
        or type(e).__name__ == "OutOfMemoryError"
        or "out of memory" in str(e).lower()
    )


def memory_problem(e: Exception, where: str) -> Problem:
    """`out-of-memory`, naming the memory needed and the memory there was. The engine's
    InsufficientMemory, raised before the run started, states both and the fix; for a failed
    allocation the allocator's own text says what it tried to allocate, and the memory the
    host had free is added."""
    need = getattr(e, "need_bytes", None)
    if need is not None:
        return problem("Insufficient memory", f"{where}: {e}", kind="out-of-memory")
    free = _host_free_bytes()
    had = f"; the host had {free / 2**30:.2f} GiB free after it failed" if free else ""
    return problem(
        "Out of memory",
        f"{where}: {type(e).__name__}: {first_line(e)}{had}; give the worker more memory, "
        "lower memory_budget_bytes, or measure fewer parameters (`parameters`)",
        kind="out-of-memory",
    )


def _host_free_bytes() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None

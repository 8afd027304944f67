"""Showing a run's progress while `wait` polls: one bar per measure of a job, per checkpoint
of a trajectory.

tqdm is an optional extra; without it (or when the stream is not a terminal) a plain line is
written each time a measure's state or iteration changes, which also reads well in CI logs.
The bar's total is the measure's iteration budget (max_iter, num_hvps, ...) when its params
name one (a trajectory's checkpoints: the spec's max_iter); iterative methods may stop early
on convergence, and the bar then jumps to full.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from sharpness_client.types import Job, MeasureProgress, Trajectory

# Params whose value bounds the iteration count the worker reports (others, such as Auto-PGD
# `iterations`, count differently: those bars show a count without a total).
BUDGET_PARAMS = ("max_iter", "num_hvps")


def _budget(run: Job | Trajectory, name: str) -> int | None:
    if isinstance(run, Trajectory):
        return run.spec.max_iter
    for m in run.spec.measures:
        if m.name == name:
            for key in BUDGET_PARAMS:
                if isinstance(m.params.get(key), int):
                    return m.params[key]
    return None


def _entries(run: Job | Trajectory) -> list[tuple[str, MeasureProgress]]:
    if isinstance(run, Trajectory):
        return [(f"checkpoint {i}", p) for i, p in enumerate(run.progress)]
    return list(run.progress.items())


class Progress:
    """Call `update(run)` after each poll and `close()` at the end."""

    def __init__(self, stream: TextIO | None = None, use_tqdm: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        if use_tqdm is None:
            use_tqdm = bool(getattr(self.stream, "isatty", lambda: False)())
        self._tqdm = _load_tqdm() if use_tqdm else None
        self._bars: dict[str, Any] = {}
        self._last: dict[str, tuple[str, int]] = {}
        self._status: str | None = None

    def update(self, job: Job | Trajectory) -> None:
        if job.status.value != self._status:
            self._status = job.status.value
            if self._tqdm is None:
                kind = "trajectory" if isinstance(job, Trajectory) else "job"
                self._line(f"{kind} {job.id}: {self._status}")
        for name, p in _entries(job):
            if self._tqdm is not None:
                self._bar(job, name, p.state, p.iteration, p.estimate, p.bound)
            elif self._last.get(name) != (p.state, p.iteration):
                self._last[name] = (p.state, p.iteration)
                est = f" estimate={_fmt(p.estimate)}" if p.estimate is not None else ""
                est += f" bound={p.bound:.3g}" if p.bound is not None else ""
                self._line(f"  {name}: {p.state} iteration {p.iteration}{est}")

    def _bar(
        self,
        job: Job | Trajectory,
        name: str,
        state: str,
        iteration: int,
        estimate: Any,
        bound: float | None = None,
    ) -> None:
        bar = self._bars.get(name)
        if bar is None:
            assert self._tqdm is not None  # bars are drawn only with tqdm loaded
            total = _budget(job, name)
            bar = self._tqdm(
                total=total, desc=name, file=self.stream, position=len(self._bars), leave=True
            )
            self._bars[name] = bar
        if state == "done" and bar.total:
            iteration = bar.total
        if bar.total is not None and iteration > bar.total:
            bar.total = iteration
        if iteration > bar.n:
            bar.update(iteration - bar.n)
        post = {"state": state}
        if estimate is not None:
            post["estimate"] = _fmt(estimate)
        if bound is not None:
            post["bound"] = f"{bound:.3g}"
        bar.set_postfix(post, refresh=True)

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and len(value) > 4:
        return f"[{', '.join(_fmt(v) for v in value[:4])}, ...]"
    return str(value)


def _load_tqdm() -> Any:
    try:
        from tqdm import tqdm  # the optional `progress` extra: loaded only when drawing bars
    except ImportError:
        return None
    return tqdm

"""What a measure gets besides its parameters: the problem, progress and cancellation hooks.

The worker passes callbacks that write progress to the job record and read a cancel flag;
a notebook passes nothing. Estimators call `ctx.step(...)` once per iteration.

`initial_params` are the weights at initialisation, w₀, by parameter name (the worker loads
them from the job's `initial_model`; a notebook passes a state dict). Measures that need a
distance from initialisation (weight_norms, pacbayes_bound) read them with `initial_vector`.

`optimizer_state` is Adam's state for preconditioned_lambda_max: `exp_avg_sq.<parameter name>`
tensors and a one-element `step` (tasks.engine.preconditioner reads it).

`operator(params)` is the one place where a curvature measure's matrix is chosen: the Hessian
(`HessianOperator`) or, for `params.curvature == "ggn"`, the generalised Gauss–Newton
(`GGNOperator`), both on the context's HVP backend, and summed over every process when the
problem is sharded (`problem.across_ranks`, tasks.engine.distributed).

Cancellation is checked twice over: at every `ctx.step` (once per iteration or block of
products), and at every `checkpoint()`, which the problem and the operators call before each
batch's forward pass and each batch's backward pass through a gradient graph. A measure whose
one product (or one block of products) takes minutes therefore still stops within one batch's
forward or backward pass of the request: torch's own kernels are not interruptible, so one
such pass is the bound. `checkpoint()` asks the `should_cancel` of the measure that is running
(`cancellable`, entered by tasks.engine.runner), and only in a single process: ranks of a
sharded problem agree on a cancel at `ctx.step` (a collective), never between batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from tasks.engine.cancel import Cancelled, cancellable, checkpoint
from tasks.engine.ggn import GGNOperator
from tasks.engine.initial import initial_vector
from tasks.engine.linear_operator import LinearOperator
from tasks.engine.operator import HessianOperator
from tasks.engine.problem import HessianProblem

__all__ = ["Cancelled", "MeasureContext", "RunOptions", "cancellable", "checkpoint"]


@dataclass(frozen=True)
class RunOptions:
    """What every measure of one run shares besides the problem and its parameters: the
    progress and cancellation hooks, the HVP backend, w₀ and Adam's state. One object, so
    the runner hands it on whole from a job's measures to each of their parameter blocks."""

    on_progress: Callable[[dict[str, Any]], None] | None = None
    should_cancel: Callable[[], bool] | None = None
    hvp_backend: str = "auto"
    initial_params: dict[str, Tensor] | None = None
    optimizer_state: dict[str, Tensor] | None = None


@dataclass
class MeasureContext:
    problem: HessianProblem
    on_progress: Callable[[dict[str, Any]], None] | None = None
    should_cancel: Callable[[], bool] | None = None
    hvp_backend: str = "auto"
    label: str = ""
    initial_params: dict[str, Tensor] | None = None
    optimizer_state: dict[str, Tensor] | None = None

    @classmethod
    def for_run(
        cls, problem: HessianProblem, options: RunOptions, label: str = ""
    ) -> MeasureContext:
        """The context of one measure (on one parameter block, `label`) of a run."""
        return cls(
            problem,
            options.on_progress,
            options.should_cancel,
            options.hvp_backend,
            label,
            initial_params=options.initial_params,
            optimizer_state=options.optimizer_state,
        )

    def initial_vector(self) -> Tensor | None:
        """w₀ over the problem's selected parameters, flat and in their order, on the problem's
        device and dtype; None when no initial parameters were given."""
        if self.initial_params is None:
            return None
        return initial_vector(self.problem, self.initial_params)

    def operator(self, params: object = None) -> LinearOperator:
        """The curvature operator a measure's `params` ask for (`curvature`, default Hessian)."""
        curvature = getattr(params, "curvature", "hessian")
        if curvature == "ggn":
            return self.problem.across_ranks(GGNOperator(self.problem, backend=self.hvp_backend))
        if curvature != "hessian":
            raise ValueError(f"curvature must be 'hessian' or 'ggn', got {curvature!r}")
        return self.problem.across_ranks(HessianOperator(self.problem, backend=self.hvp_backend))

    def step(self, iteration: int, estimate: Any = None, **extra: Any) -> None:
        """Report one iteration and stop here if cancellation was requested."""
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("cancelled by request")
        if self.on_progress is not None:
            info = {"iteration": iteration, "estimate": estimate, **extra}
            if self.label:
                info["block"] = self.label
            self.on_progress(info)

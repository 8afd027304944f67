"""The one interface every curvature estimator sees: a symmetric matrix through its products.

`HessianOperator` and `MatrixOperator` (tasks.engine.operator), `GGNOperator`
(tasks.engine.ggn) and `PreconditionedOperator` (tasks.engine.preconditioner) all satisfy
`LinearOperator`; Lanczos, the trace estimators and SLQ are written against it alone.
`as_operator` lets an estimator take a dense tensor too (wrapped in a `MatrixOperator`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class LinearOperator(Protocol):
    """A dim×dim symmetric matrix seen through products, returned in `dtype` on `device`.

    `hvps` counts the products computed so far (one per column), `seconds` the time spent in
    them."""

    dim: int
    dtype: torch.dtype
    device: torch.device | str
    hvps: int
    seconds: float

    def matvec(self, v: Tensor) -> Tensor: ...

    def matmat(self, V: Tensor) -> Tensor: ...


def as_operator(operator: LinearOperator | Tensor) -> LinearOperator:
    """The operator itself, or a dense square tensor wrapped in a `MatrixOperator`."""
    if isinstance(operator, Tensor):
        from tasks.engine.operator import MatrixOperator

        return MatrixOperator(operator)
    return operator

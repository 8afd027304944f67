"""The one interface every curvature estimator sees: a symmetric matrix through its products.

`HessianOperator` (tasks.engine.operator), `GGNOperator` (tasks.engine.ggn),
`PreconditionedOperator` (tasks.engine.preconditioner), `AllReducedOperator`
(tasks.engine.distributed), `MatrixOperator` and `DiagonalOperator` (here) all satisfy
`LinearOperator`; Lanczos,
the trace estimators and SLQ are written against it alone. `as_operator` lets an estimator
take a dense tensor too (wrapped in a `MatrixOperator`).

The protocol's members are read-only properties: an estimator only reads them, and an
operator may hold them as plain attributes or compute them (a wrapper's `hvps` is its inner
operator's), with a device that is a `torch.device` or its name.
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

    @property
    def dim(self) -> int: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device | str: ...

    @property
    def hvps(self) -> int: ...

    @property
    def seconds(self) -> float: ...

    def matvec(self, v: Tensor) -> Tensor: ...

    def matmat(self, V: Tensor) -> Tensor: ...


class MatrixOperator:
    """A dense symmetric matrix behind the same interface (tests, small exact problems, and a
    dense tensor handed to an estimator through `as_operator`)."""

    def __init__(self, matrix: Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError("expected a square matrix")
        self.matrix = matrix.double()
        self.dim = int(matrix.shape[0])
        self.dtype = torch.float64
        self.device = matrix.device
        self.hvps = 0
        self.seconds = 0.0  # products of a dense matrix are not timed

    def matvec(self, v: Tensor) -> Tensor:
        self.hvps += 1
        return self.matrix @ v.double()

    def matmat(self, V: Tensor) -> Tensor:
        self.hvps += V.shape[1]
        return self.matrix @ V.double()


class DiagonalOperator:
    """A diagonal matrix behind the same interface: a spectrum known exactly, at any size, for
    the memory of one vector (Lanczos and its memory measured at millions of parameters). Its
    products are in the diagonal's dtype, or the vector's if wider."""

    def __init__(self, diagonal: Tensor) -> None:
        if diagonal.ndim != 1:
            raise ValueError("expected the diagonal as a vector")
        self.diagonal = diagonal
        self.dim = int(diagonal.shape[0])
        self.dtype = diagonal.dtype
        self.device = diagonal.device
        self.hvps = 0
        self.seconds = 0.0  # products of a diagonal are not timed

    def matvec(self, v: Tensor) -> Tensor:
        self.hvps += 1
        return self.diagonal * v

    def matmat(self, V: Tensor) -> Tensor:
        self.hvps += V.shape[1]
        return self.diagonal[:, None] * V


def as_operator(operator: LinearOperator | Tensor) -> LinearOperator:
    """The operator itself, or a dense square tensor wrapped in a `MatrixOperator`."""
    if isinstance(operator, Tensor):
        return MatrixOperator(operator)
    return operator

"""What a Lanczos run is asked for (`LanczosOptions`) and the budget that follows from it and
the operator (`LanczosBudget`): how many eigenvalues, steps and basis vectors, and the
tolerances in the products' dtype. Checked once, before any product is computed."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tasks.engine.convergence import default_tol
from tasks.engine.linear_operator import LinearOperator
from tasks.engine.precision import dtype_for_eps, operator_dtype

#: basis vectors held by default (the budget); raised to 2·wanted + 10 for large k
DEFAULT_MAX_BASIS = 40


def default_max_basis(k: int, most_negative: bool = False) -> int:
    """The basis held when none is asked for: room for the wanted vectors twice over."""
    return max(DEFAULT_MAX_BASIS, 2 * (k + int(most_negative)) + 10)


@dataclass(frozen=True)
class LanczosOptions:
    """Everything a caller may ask of `lanczos` (tasks.engine.lanczos.solver says what each
    does); one object, so that measures and the trajectory pass it on whole."""

    k: int = 1
    tol: float | None = None
    max_iter: int = 300
    most_negative: bool = False
    return_eigenvectors: bool = False
    seed: int = 0
    warn: bool = True
    max_basis: int | None = None
    basis_dtype: torch.dtype = torch.float64
    basis_device: torch.device | str | None = None
    atol: float = 0.0
    hvp_eps: float | None = None


@dataclass(frozen=True)
class LanczosBudget:
    """The run's sizes and targets: `k` wanted top eigenvalues (at most dim), the most
    negative one too when `wanted_bottom` is 1, a basis of at most `max_basis` vectors,
    `max_steps` products, and the relative `tol` / absolute `atol` in a dtype of unit
    roundoff `eps`."""

    dim: int
    k: int
    wanted_bottom: int
    max_basis: int
    max_steps: int
    dtype: torch.dtype
    eps: float
    tol: float
    atol: float

    @property
    def most_negative(self) -> bool:
        return self.wanted_bottom > 0

    @classmethod
    def plan(cls, options: LanczosOptions, operator: LinearOperator) -> LanczosBudget:
        """The budget of `options` on `operator`; a ValueError when k < 1 or the basis asked
        for cannot hold the wanted vectors and room to grow."""
        dim = operator.dim
        if options.k < 1:
            raise ValueError("k must be at least 1")
        k = min(options.k, dim)
        wanted_bottom = int(options.most_negative)
        m = min(_basis_size(options, k, min(k + wanted_bottom, dim), dim), dim)
        max_steps = options.max_iter if m < dim else min(options.max_iter, dim)
        if options.hvp_eps is None:
            dtype = operator_dtype(operator)
            eps = float(torch.finfo(dtype).eps)
        else:
            dtype, eps = dtype_for_eps(options.hvp_eps), float(options.hvp_eps)
        tol = default_tol(dtype) if options.tol is None else float(options.tol)
        return cls(dim, k, wanted_bottom, m, max_steps, dtype, eps, tol, options.atol)


def _basis_size(options: LanczosOptions, k: int, wanted: int, dim: int) -> int:
    """The basis vectors asked for, or the default; refused when too small to make progress."""
    if options.max_basis is None:
        return default_max_basis(k, options.most_negative)
    if options.max_basis < wanted + 2 and options.max_basis < dim:
        raise ValueError(
            f"max_basis={options.max_basis} is too small for k={k}"
            f"{' and most_negative' if options.most_negative else ''}: the basis must hold the "
            f"{wanted} wanted vectors and room to grow, at least {wanted + 2}; raise "
            f"max_basis (2·{wanted} + 10 or more converges in far fewer restarts)"
        )
    return options.max_basis

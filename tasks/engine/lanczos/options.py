"""What a Lanczos run is asked for (`LanczosOptions`) and the budget that follows from it and
the operator (`LanczosBudget`): how many eigenvalues, steps and basis vectors, the basis'
dtype and device, and the tolerances in the products' dtype. Checked once, before any product
is computed: the basis is sized to the memory it may use (tasks.engine.memory), and a run
whose smallest useful basis does not fit raises InsufficientMemory before it starts.

The basis is held in the products' precision by default: float64 for float64 models (so their
1e-10 contract keeps its orthogonality), float32 for float32 and lower (half the memory; its
arithmetic is still done in float64 a block of rows at a time, so orthogonality holds to
about 1e-7, below the float32 products' own rounding, which the contract stops at)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tasks.engine.convergence import default_tol
from tasks.engine.linear_operator import LinearOperator
from tasks.engine.memory import BasisPlan, Storage, plan_basis
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
    basis_dtype: torch.dtype | None = None  # None: the products' (float64 or float32)
    basis_device: torch.device | str | None = None  # None: the operator's
    atol: float = 0.0
    hvp_eps: float | None = None
    memory_budget_bytes: int | None = None  # None: a share of the memory available
    basis_storage: Storage = "auto"  # memory, a file, or a file when memory cannot hold it
    spill_dir: str | None = None  # where a spilled basis goes (None: TMPDIR)


def basis_dtype_for(products: torch.dtype) -> torch.dtype:
    """The basis dtype that matches products in `products`: float64 stays float64, anything
    lower is held in float32 (a float16 basis would lose orthogonality the contract needs)."""
    return torch.float64 if products == torch.float64 else torch.float32


@dataclass(frozen=True)
class LanczosBudget:
    """The run's sizes and targets: `k` wanted top eigenvalues (at most dim), the most
    negative one too when `wanted_bottom` is 1, a basis of at most `max_basis` vectors,
    `max_steps` products, and the relative `tol` / absolute `atol` in a dtype of unit
    roundoff `eps`. The basis is `basis_dtype` on `basis_device`; `memory` says what the
    basis was sized from."""

    dim: int
    k: int
    wanted_bottom: int
    max_basis: int
    max_steps: int
    dtype: torch.dtype
    eps: float
    tol: float
    atol: float
    basis_dtype: torch.dtype = torch.float64
    basis_device: torch.device = torch.device("cpu")
    memory: BasisPlan | None = None

    @property
    def most_negative(self) -> bool:
        return self.wanted_bottom > 0

    @classmethod
    def plan(cls, options: LanczosOptions, operator: LinearOperator) -> LanczosBudget:
        """The budget of `options` on `operator`; a ValueError when k < 1 or the basis asked
        for cannot hold the wanted vectors and room to grow, InsufficientMemory when the
        smallest basis that can hold them does not fit in the memory the run may use."""
        dim = operator.dim
        if options.k < 1:
            raise ValueError("k must be at least 1")
        k = min(options.k, dim)
        wanted_bottom = int(options.most_negative)
        wanted = min(k + wanted_bottom, dim)
        asked = min(_basis_size(options, k, wanted, dim), dim)
        if options.hvp_eps is None:
            dtype = operator_dtype(operator)
            eps = float(torch.finfo(dtype).eps)
        else:
            dtype, eps = dtype_for_eps(options.hvp_eps), float(options.hvp_eps)
        basis_dtype = options.basis_dtype or basis_dtype_for(operator_dtype(operator))
        device = torch.device(options.basis_device or operator.device)
        memory = plan_basis(
            dim,
            asked,
            min(wanted + 2, dim),
            basis_dtype,
            device,
            options.memory_budget_bytes,
            options.basis_storage,
            options.spill_dir,
        )
        m = memory.columns
        max_steps = options.max_iter if m < dim else min(options.max_iter, dim)
        tol = default_tol(dtype) if options.tol is None else float(options.tol)
        return cls(
            dim, k, wanted_bottom, m, max_steps, dtype, eps, tol, options.atol,
            basis_dtype, device, memory,
        )  # fmt: skip


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

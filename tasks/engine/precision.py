"""What the dtype of an operator's products lets an estimate certify.

Every estimator compares its error with a rounding level: ROUNDING_FACTOR · eps · (a scale
of the quantity), eps the unit roundoff of the dtype the products are computed in (the
model's: a dense matrix or an operator that does not say computes in float64). Lanczos, the
trace estimators and adaptive sharpness share these, so they sit below all of them.
"""

from __future__ import annotations

from typing import Any

import torch

#: rounding level = ROUNDING_FACTOR · eps(HVP dtype) · scale; see `rounding_level`
ROUNDING_FACTOR = 2.0

#: how many wrappers `operator_dtype` looks through (a preconditioned, all-reduced Hessian)
_WRAPPER_DEPTH = 8


def operator_dtype(operator: Any) -> torch.dtype:
    """The dtype the operator computes its products in: its `compute_dtype`, its problem's
    dtype, or those of the operator it wraps (`inner`); float64 if none says."""
    for _ in range(_WRAPPER_DEPTH):
        if operator is None:
            break
        dtype = getattr(operator, "compute_dtype", None)
        if dtype is None:
            dtype = getattr(getattr(operator, "problem", None), "dtype", None)
        if isinstance(dtype, torch.dtype):
            return dtype
        operator = getattr(operator, "inner", None)
    return torch.float64


def unit_roundoff(dtype: torch.dtype) -> float:
    """eps of `dtype`: the relative spacing of its numbers near 1."""
    return float(torch.finfo(dtype).eps)


def operator_eps(operator: Any) -> float:
    """Unit roundoff of the dtype the operator computes its products in (float64 if unknown)."""
    return unit_roundoff(operator_dtype(operator))


def dtype_for_eps(eps: float) -> torch.dtype:
    """The floating dtype whose unit roundoff is `eps` (the nearest coarser one otherwise)."""
    dtypes = sorted(
        (torch.float64, torch.float32, torch.bfloat16, torch.float16),
        key=lambda d: torch.finfo(d).eps,
    )
    return next((d for d in dtypes if torch.finfo(d).eps >= eps * (1 - 1e-9)), dtypes[-1])


def rounding_level(eps: float, norm: float) -> float:
    """The smallest eigenvalue error products in a dtype of unit roundoff eps can certify."""
    return ROUNDING_FACTOR * eps * norm

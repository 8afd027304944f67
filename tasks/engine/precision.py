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


# ------------------------------------------------------------------ the products' dtype
#: what a job may ask its products to be computed in (tasks.contract.jobs.JobSpec.precision)
PRECISIONS = ("auto", "model", "float32", "float64")

#: dtypes too coarse to certify a curvature: `auto` computes their products in float32
_HALF = (torch.float16, torch.bfloat16)


def dtype_name(dtype: torch.dtype) -> str:
    """'bfloat16' for torch.bfloat16."""
    return str(dtype).removeprefix("torch.")


def products_dtype(model_dtype: torch.dtype, asked: str = "auto") -> torch.dtype:
    """The dtype a model of `model_dtype` has its products computed in, when `asked`:

    - "auto": float16 and bfloat16 models in float32 (their own rounding, about 4e-3
      relative for bfloat16, would stop every estimate long before it says anything), any
      other dtype as it is;
    - "model": the model's own dtype, whatever it is;
    - "float32", "float64": that dtype (float64 gives exact products for a small model).
    """
    if asked == "auto":
        return torch.float32 if model_dtype in _HALF else model_dtype
    if asked == "model":
        return model_dtype
    if asked == "float32":
        return torch.float32
    if asked == "float64":
        return torch.float64
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {asked!r}")


def floating_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The dtype of the module's first floating parameter (else buffer), or None."""
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def cast_floating(module: torch.nn.Module, dtype: torch.dtype) -> int:
    """Cast every floating parameter and buffer of `module` to `dtype`, in place (integer and
    bool buffers are left alone, tied parameters stay one tensor). Returns how many tensors
    changed dtype."""
    changed = sum(
        1 for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()
        and t.dtype != dtype
    )  # fmt: skip
    if changed:
        module.to(dtype)
    return changed

"""The run the Lanczos measures (lambda_max, top_eigenvalues) share (`eigen_measure`), with the
solver's options from their shared parameters (tasks.contract.measures.eigen). Not a measure:
the registry lists the measures."""

from __future__ import annotations

from typing import Any

import torch

from tasks.contract.measures.eigen import EigensolverParams
from tasks.engine.context import MeasureContext
from tasks.engine.lanczos import LanczosResult, lanczos
from tasks.engine.measures.base import attributes, measured

#: the declared basis dtypes; "auto" (None) follows the products: float64 or float32
BASIS_DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "float64": torch.float64,
    "float32": torch.float32,
}


def lanczos_options(params: EigensolverParams) -> dict[str, Any]:
    """Keyword arguments for tasks.engine.lanczos.lanczos from the shared parameters."""
    return {
        "tol": params.tol,
        "atol": params.atol,
        "max_basis": params.max_basis,
        "basis_dtype": BASIS_DTYPES[params.basis_dtype],
        "basis_device": "cpu" if params.basis_on_host else None,
        "memory_budget_bytes": params.memory_budget_bytes,
        "basis_storage": params.basis_storage,
    }


def budget_diagnostics(res: LanczosResult) -> dict[str, Any]:
    """What the result says about its errors, why it stopped, and its memory."""
    return {
        **attributes(
            res,
            "limited_by",
            "tol",
            "rounding_level",
            "hvp_eps",
            "measured_residuals",
            "restarts",
            "max_basis",
        ),
        "basis_vectors_peak": res.basis_peak,
        "basis_bytes_peak": res.basis_bytes_peak,
        "basis_limited_by_memory": res.basis_limited_by_memory,
        "basis_spilled": res.basis_spilled,
        "basis_file_bytes_peak": res.basis_file_bytes_peak,
        "memory_budget_bytes": res.memory_budget_bytes,
        "bytes_per_parameter": res.bytes_per_parameter,
    }


NEGATIVE_FIELDS = ("", "_bound", "_error", "_converged", "_limited_by")


def eigen_measure(
    ctx: MeasureContext, params: EigensolverParams, k: int | None = None
) -> dict[str, Any]:
    """The top `k` eigenvalues of the context's curvature by Lanczos, each with its residual
    bound and error estimate, the most negative one and the eigenvectors on request, and the
    memory budget. `k=None` is lambda_max: the top eigenvalue alone, and each figure a number
    (`residual_bound`, `eigenvector`) where top_eigenvalues reports lists.

    `converged` and `diagnostics.limited_by` follow tasks.engine.convergence: for the top k
    together, limited_by is the worst of `limited_by_each` (one per eigenvalue); the most
    negative one has its own `most_negative_converged` and `most_negative_limited_by`."""
    op = ctx.operator(params)
    res = lanczos(
        op,
        k=k or 1,
        max_iter=params.max_iter,
        most_negative=params.most_negative,
        return_eigenvectors=params.return_eigenvectors,
        seed=params.seed,
        ctx=ctx,
        **lanczos_options(params),
    )
    if k is None:
        value: float | list[float] = res.eigenvalues[0]
        diag: dict[str, Any] = {
            "residual_bound": res.residual_bounds[0],
            "error_estimate": res.error_estimates[0],
        }
    else:
        value = res.eigenvalues
        diag = attributes(res, "residual_bounds", "error_estimates", "limited_by_each")
    # the curvature operators name their HVP backend; the LinearOperator protocol does not
    backend = getattr(op, "backend", None)
    diag.update(iterations=res.iterations, backend=backend, **budget_diagnostics(res))
    if params.most_negative:
        diag.update(attributes(res, *(f"most_negative{s}" for s in NEGATIVE_FIELDS)))
    if params.return_eigenvectors and res.eigenvectors is not None:
        if k is None:
            diag["eigenvector"] = res.eigenvectors[:, 0].tolist()
        else:
            diag["eigenvectors"] = res.eigenvectors.T.tolist()
    return measured(value, diag, converged=res.converged, hvps=op.hvps)

"""What the Lanczos measures (lambda_max, top_eigenvalues) share: tolerances and the memory
budget (`EigensolverParams`), and the run itself (`eigen_measure`). Not a measure: the registry
lists the measure modules by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from tasks.engine.measures.base import CurvatureParams, attributes, measured

if TYPE_CHECKING:
    from tasks.engine.context import MeasureContext
    from tasks.engine.lanczos import LanczosResult


class EigensolverParams(CurvatureParams):
    """Tolerances and the memory budget shared by the Lanczos measures."""

    tol: float | None = Field(
        default=None,
        gt=0,
        le=0.1,
        description="Relative accuracy asked for, max(tol·|θ|, atol). Default: as tight as the "
        "model's dtype allows (float32 and lower: stop at the products' rounding floor, about "
        "1e-7·‖H‖; float64: 1e-10). `converged` is true when each error estimate (which "
        "includes the products' rounding) is within it or within 4× the rounding level; "
        "diagnostics.limited_by says which ('tolerance', 'float32 rounding', ...) or names the "
        "budget that stopped the run ('iteration budget': raise max_iter).",
    )
    atol: float = Field(
        default=0.0,
        ge=0,
        description="Absolute accuracy accepted instead (max(tol·|θ|, atol)): for eigenvalues "
        "at or near zero, where a relative tol cannot be met.",
    )
    max_basis: int | None = Field(
        default=None,
        ge=3,
        le=10_000,
        description="Memory budget: Lanczos vectors held at once (each one vector of the "
        "model's size, float64 unless basis_dtype says otherwise). Past it the basis is "
        "compressed by thick restart (diagnostics.restarts; a warning). Default 40, or "
        "2·(k + most_negative) + 10 when larger; at least k + 2 (+1 with most_negative).",
    )
    basis_dtype: Literal["float64", "float32"] = Field(
        default="float64",
        description="Precision of the stored basis: float32 halves its memory; orthogonality "
        "then holds to about 1e-7, fine for float32 models and for tol ≥ 1e-6.",
    )
    basis_on_host: bool = Field(
        default=False,
        description="Hold the basis in host (CPU) memory while the HVPs run on the GPU.",
    )
    if TYPE_CHECKING:  # each measure declares these, with its own defaults
        max_iter: int
        most_negative: bool
        return_eigenvectors: bool

    @model_validator(mode="after")
    def _basis_fits_the_wanted_vectors(self) -> EigensolverParams:
        wanted = getattr(self, "k", 1) + int(getattr(self, "most_negative", False))
        if self.max_basis is not None and self.max_basis < wanted + 2:
            raise ValueError(
                f"max_basis={self.max_basis} cannot hold the {wanted} wanted Ritz vectors and "
                f"room to grow: set max_basis to at least {wanted + 2} (2·{wanted} + 10 or more "
                "restarts far less), or leave it out for the default"
            )
        return self


def lanczos_options(params: EigensolverParams) -> dict[str, Any]:
    """Keyword arguments for tasks.engine.lanczos.lanczos from the shared parameters."""
    import torch

    return {
        "tol": params.tol,
        "atol": params.atol,
        "max_basis": params.max_basis,
        "basis_dtype": torch.float32 if params.basis_dtype == "float32" else torch.float64,
        "basis_device": "cpu" if params.basis_on_host else None,
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
    from tasks.engine.lanczos import lanczos

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
    diag.update(iterations=res.iterations, backend=op.backend, **budget_diagnostics(res))
    if params.most_negative:
        diag.update(attributes(res, *(f"most_negative{s}" for s in NEGATIVE_FIELDS)))
    if params.return_eigenvectors and res.eigenvectors is not None:
        if k is None:
            diag["eigenvector"] = res.eigenvectors[:, 0].tolist()
        else:
            diag["eigenvectors"] = res.eigenvectors.T.tolist()
    return measured(value, diag, converged=res.converged, hvps=op.hvps)

"""What the Lanczos measures (lambda_max, top_eigenvalues) share: tolerances and the memory
budget. Not a measure: the catalogue lists the measures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from tasks.contract.measures.base import CurvatureParams


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
        description="Lanczos vectors held at once (each one vector of the model's size, in "
        "basis_dtype). Past it the basis is compressed by thick restart "
        "(diagnostics.restarts; a warning). Default 40, or 2·(k + most_negative) + 10 when "
        "larger; at least k + 2 (+1 with most_negative). Fewer are held when fewer fit in "
        "memory_budget_bytes (diagnostics.basis_limited_by_memory).",
    )
    basis_dtype: Literal["auto", "float64", "float32"] = Field(
        default="auto",
        description="Precision of the stored basis. auto: the products' (float64 for float64 "
        "models, float32 for float32 and lower). float32 halves a float64 basis; "
        "orthogonality then holds to about 1e-7, fine for float32 models and for tol ≥ 1e-6.",
    )
    memory_budget_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Bytes the basis and the working vectors may take (the model and its "
        "gradient graph are not counted). Default: a quarter of the memory the device can "
        "still give the worker. The basis holds as many vectors as fit, up to max_basis; "
        "when not even k + 2 fit, the job fails with problem out-of-memory naming the "
        "bytes needed and available.",
    )
    basis_storage: Literal["auto", "memory", "file"] = Field(
        default="auto",
        description="Where the basis is held. auto: in memory when max_basis vectors fit "
        "there (memory_budget_bytes, or a quarter of the memory available), otherwise in a "
        "temporary file in the worker's TMPDIR (diagnostics.basis_spilled), read a block of "
        "rows at a time: the same numbers, the worker's memory holding only the working "
        "vectors, each step reading the basis from the page cache or disk. memory: never "
        "spill; hold fewer vectors instead (more restarts). file: always spill.",
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

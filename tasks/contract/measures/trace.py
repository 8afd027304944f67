"""Hessian trace by block Krylov, XTrace, Hutch++ or Hutchinson, with standard error and 95%
interval.

Block Krylov (default), XTrace and Hutch++ compute the trace exactly on a subspace holding the
top of the spectrum and estimate the remainder stochastically; on fast-decaying Hessian
spectra they reach a given error with far fewer HVPs than Hutchinson. Block Krylov builds its
subspace by block Lanczos at one HVP per dimension (the others spend two), and had the lowest
error at 100 HVPs on every decaying spectrum of the benchmark. Hutchinson alone supports an
early stop on a relative tolerance.

Every 95% interval includes the rounding level of the products (`diagnostics.rounding_level`,
tasks.engine.trace.rounding), so an exact trace (a basis spanning the space) has an interval
of nonzero width; it is `converged` with limited_by "<dtype> rounding". With `rtol`
(Hutchinson) `converged` says whether it was met and `limited_by` why the run stopped.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.contract.measures.base import CurvatureParams

NAME = "trace"


class Params(CurvatureParams):
    method: Literal["krylov", "xtrace", "hutch++", "hutchinson"] = Field(
        default="krylov", description="Estimator (see the measure's description)."
    )
    num_hvps: int = Field(default=100, ge=4, le=100_000, description="HVP budget.")
    rtol: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Hutchinson only: stop early once the standard error plus the rounding "
        "level ≤ rtol·|estimate| (absolute values compared; at least 10 probes), or once it is "
        "within 4× the rounding level; reaching num_hvps first is not converged.",
    )

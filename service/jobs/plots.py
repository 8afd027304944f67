"""Pictures of job results: `GET /v1/jobs/{id}/plots/spectral_density.png`.

Rendered on request from the job record (no file is stored): the record holds the grid, the
density and the Ritz nodes, and rendering takes tens of milliseconds once matplotlib is
imported (lazily, on the first picture).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.common import ExistingJob, problems
from service.plots.responses import png_openapi, png_response
from service.problems import ProblemError

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get(
    "/{id}/plots/spectral_density.png",
    response_class=Response,
    summary="Spectral density picture",
    responses=png_openapi("The density on a log axis, Ritz nodes as a rug, λmax marked.")
    | problems(404, 409, 422),
)
def spectral_density_png(job: ExistingJob) -> Response:
    """PNG of the job's `spectral_density` result. **404** when the job does not exist or
    has no such result (it did not ask for the measure, or the measure failed); **409** while
    the job that asked for it is still queued or running."""
    result = job.results.get("spectral_density")
    if result is None:
        asked = any(m.name == "spectral_density" for m in job.spec.measures)
        if asked and not job.status.terminal:
            raise ProblemError(
                409,
                "not-finished",
                f"id: job {job.id} is {job.status.value}; its spectral_density picture exists once "
                "it has finished",
                headers={"Retry-After": "2"},
            )
        why = "did not ask for spectral_density" if not asked else f"{job.status.value} without it"
        raise ProblemError(
            404, "no-result", f"id: job {job.id} has no spectral_density result ({why})"
        )
    diag = result.diagnostics
    if not diag.get("grid") or not diag.get("density"):
        raise ProblemError(404, "no-result", f"id: job {job.id}'s spectral_density has no density")
    # deferred: matplotlib loads only for the first plot, not with the gateway
    from service.plots.density import render_spectral_density

    dim = diag.get("dim")
    title = "Hessian spectral density (stochastic Lanczos quadrature)"
    if dim:
        title += f", {dim} parameters"
    png = render_spectral_density(
        diag["grid"], diag["density"], diag.get("nodes"), diag.get("lambda_max"), title
    )
    return png_response(png)

"""Pictures: the render functions return real PNGs of a sensible size, and the endpoints
answer image/png or the right problem (404 no result, 409 not finished). No worker runs:
results are written to the real job store the way the worker writes them."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from fastapi.testclient import TestClient

from service.plots.density import render_spectral_density
from service.plots.study import render_study_scatter
from service.plots.trajectory import render_trajectory
from tasks.contract.spec import JobStatus
from tasks.engine.density import slq
from tasks.engine.linear_operator import MatrixOperator
from tasks.settings import Settings
from tasks.store.records import JobStore
from tests.api.checks import assert_problem

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode(png: bytes):
    """The image as an array (height, width, channels): it really is a PNG."""
    import matplotlib.image

    assert png[:8] == PNG_SIGNATURE
    return matplotlib.image.imread(io.BytesIO(png), format="png")


def assert_picture(png: bytes, min_px: int = 300) -> None:
    img = decode(png)
    h, w = img.shape[:2]
    assert min_px <= h <= 2000 and min_px <= w <= 2000, img.shape
    assert img[..., :3].std() > 0.01  # not a blank canvas


def density_result() -> dict:
    """A real spectral_density result: SLQ on a known diagonal spectrum."""
    eigs = torch.cat([torch.zeros(30), torch.linspace(0.1, 1, 10), torch.tensor([8.0])])
    est = slq(MatrixOperator(torch.diag(eigs.double())), runs=3, steps=20, seed=0)
    return {
        "value": est.effective_rank,
        "diagnostics": {
            "grid": est.grid,
            "density": est.density,
            "nodes": est.nodes,
            "lambda_max": est.lambda_max,
            "dim": 41,
        },
    }


# ---------------------------------------------------------------------------- renderers
def test_study_scatter_png() -> None:
    png = render_study_scatter(
        "lambda_max",
        [1.0, 2.5, 3.0, float("nan")],
        [0.1, 0.3, 0.2, 0.4],
        0.33,
        labels=["lr=0.1", "lr=0.05", "lr=0.01", "bad"],
        baseline={"name": "1/lr", "xs": [10.0, 20.0, 100.0, 5.0], "tau": 0.67},
    )
    assert_picture(png)


def test_study_scatter_refuses_ragged_input() -> None:
    with pytest.raises(ValueError, match="gaps has 1"):
        render_study_scatter("trace", [1.0, 2.0], [0.1], None)


def test_density_png_from_slq() -> None:
    d = density_result()["diagnostics"]
    assert_picture(render_spectral_density(d["grid"], d["density"], d["nodes"]))


def test_trajectory_png() -> None:
    png = render_trajectory([0, 10, 20], [0.4, 1.2, 0.9], [0.99, 0.5], [0.97, 0.8], k=3)
    assert_picture(png)
    assert_picture(render_trajectory([0], [0.5], [], [], k=1))


def test_plots_import_no_torch() -> None:
    code = (
        "import sys; from service.plots import study, density, trajectory; "
        "study.render_study_scatter('m', [1.0, 2.0], [0.1, 0.2], 1.0); "
        "assert 'torch' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


# ---------------------------------------------------------------------------- endpoint
def submit(client: TestClient, model_id: str, dataset_id: str, measures: list[str]) -> str:
    body = {"model": model_id, "dataset": {"id": dataset_id}, "measures": measures}
    body["measures"] = [{"name": m} for m in measures]
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}/plots/spectral_density.png"


def test_spectral_density_png_endpoint(
    client: TestClient, model_id: str, dataset_id: str, settings: Settings
) -> None:
    store = JobStore.from_url(settings.redis_url)
    job_id = submit(client, model_id, dataset_id, ["spectral_density"])
    assert_problem(client.get(url(job_id)), 409, "queued")
    store.mark_running(job_id, "w1", "cpu", {})
    assert_problem(client.get(url(job_id)), 409, "running")
    store.finish(job_id, JobStatus.succeeded, results={"spectral_density": density_result()})
    r = client.get(url(job_id))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert_picture(r.content)


def test_spectral_density_png_problems(
    client: TestClient, model_id: str, dataset_id: str, settings: Settings
) -> None:
    store = JobStore.from_url(settings.redis_url)
    assert_problem(client.get(url("a" * 32)), 404, "no job")
    other = submit(client, model_id, dataset_id, ["lambda_max"])
    assert_problem(client.get(url(other)), 404, "did not ask for spectral_density")
    failed = submit(client, model_id, dataset_id, ["spectral_density"])
    store.finish(failed, JobStatus.failed, results={})
    assert_problem(client.get(url(failed)), 404, "failed without it")

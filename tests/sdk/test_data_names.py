"""Data named as users name it, through the SDK and the CLI against a real service: arrays
recognised by common names, names given at upload stored and reused, names given on the
command line (one, or JSON for several), and the Hugging Face example run as written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sharpness_client import Client
from sharpness_client._convert import export_module
from tests.sdk import models as M
from tests.sdk.test_e2e_cli import sharpness

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    x, _ = M.data(n=4, seed=1)
    path = tmp_path / "mlp.pt2"
    path.write_bytes(export_module(M.mlp(seed=3), x[:2]))
    return path


def test_cli_names_arrays(service_url: str, model: Path, tmp_path: Path) -> None:
    x, y = M.data(n=24, seed=2)
    np.savez(tmp_path / "odd.npz", feats=x, answer=y)
    args = ["measure", str(model), "--data", str(tmp_path / "odd.npz"), "--measure", "trace"]
    refused = sharpness(*args, url=service_url)
    assert refused.returncode != 0 and "arrays: answer, feats" in refused.stderr
    named = sharpness(
        *args, "--inputs-key", "feats", "--targets-key", "answer", "--json", url=service_url
    )
    assert named.returncode == 0, named.stderr
    job = json.loads(named.stdout)
    assert job["status"] == "succeeded" and job["evaluation"]["num_examples"] == 24
    # the names are stored: the same data by id needs none, and a list works as JSON
    with Client(service_url) as client:
        info = client.datasets.upload(tmp_path / "odd.npz")
        assert (info.inputs_key, info.targets_key) == ("feats", "answer")
    listed = sharpness(
        "measure", str(model), "--data", info.id, "--measure", "trace",
        "--inputs-key", '["feats"]', "--json", url=service_url,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["spec"]["dataset"]["inputs_key"] == ["feats"]


def test_sdk_recognises_x_y(service_url: str, model: Path, tmp_path: Path) -> None:
    x, y = M.data(n=16, seed=4)
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    with Client(service_url) as client:
        job = client.measure(model, tmp_path / "xy.npz", measures=["lambda_max"])
        assert job.status.value == "succeeded"
        assert job.results["lambda_max"].diagnostics["objective"]["num_targets"] == 16


def test_hugging_face_example_runs_as_written(service_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "SHARPNESS_URL": service_url, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hf_models.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("bert: lambda_max") and "over 32 counted targets" in lines[0]
    assert lines[1].startswith("gpt2: lambda_max") and f"over {32 * 13} counted" in lines[1]


def test_measure_passes_the_keys_to_the_upload_and_the_job(
    service_url: str, model: Path, tmp_path: Path
) -> None:
    """client.measure(..., targets_key=...) names the arrays of a file it uploads (the names
    are stored with it) and of the job; an id takes them too; the async client the same."""
    import asyncio

    from sharpness_client import AsyncClient

    x, y = M.data(n=12, seed=5)
    np.savez(tmp_path / "odd.npz", feats=x, label_ids=y)
    with Client(service_url) as client:
        job = client.measure(
            model, tmp_path / "odd.npz", ["trace"], inputs_key="feats", targets_key="label_ids"
        )
        assert job.status.value == "succeeded"
        assert (job.spec.dataset.inputs_key, job.spec.dataset.targets_key) == ("feats", "label_ids")
        stored = client.datasets.get(job.spec.dataset.id)
        assert (stored.inputs_key, stored.targets_key) == ("feats", "label_ids")
        again = client.measure(job.spec.model, stored.id, ["trace"], targets_key="label_ids")
        assert again.spec.dataset.targets_key == "label_ids"

    async def run() -> str:
        async with AsyncClient(service_url) as client:
            done = await client.measure(
                model, tmp_path / "odd.npz", ["trace"], inputs_key="feats", targets_key="label_ids"
            )
            return done.status.value

    assert asyncio.run(run()) == "succeeded"

"""The sharpness gate end to end: the installed `sharpness` command against a real gateway and
worker, as a CI step runs it. A broken limit exits 6 with one line on stderr saying which and
by how much; a kept one exits 0; `--mlflow` logs the job to a real local MLflow store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sharpness_client._convert import arrays_to_npz, export_module
from sharpness_client._gate import EXIT_GATE
from tests.integration.conftest import Stack
from tests.sdk import models as M

pytestmark = pytest.mark.integration

SCRIPT = shutil.which("sharpness", path=str(Path(sys.executable).parent)) or "sharpness"


def sharpness(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "SHARPNESS_URL": stack.url, **env}
    environ.pop("SHARPNESS_API_KEY", None)
    return subprocess.run(
        [SCRIPT, *args], env=environ, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gate-files")
    x, y = M.data(n=32, seed=7)
    out = {"data": root / "data.npz", "a": root / "a.pt2", "b": root / "b.pt2"}
    out["data"].write_bytes(arrays_to_npz(x, y))
    out["a"].write_bytes(export_module(M.mlp(seed=3), x[:2]))
    out["b"].write_bytes(export_module(M.mlp(seed=4), x[:2]))
    return out


def measure(stack: Stack, files: dict[str, Path], model: str, *gate: str, **env: str):
    return sharpness(
        stack,
        "measure",
        str(files[model]),
        "--data",
        str(files["data"]),
        "--measure",
        "lambda_max",
        "--device",
        "cpu",
        "--timeout",
        "120",
        "--poll-interval",
        "0.2",
        "--json",
        *gate,
        **env,
    )


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stderr.strip().splitlines()[-1]


def test_fail_above(gate_stack: Stack, files: dict[str, Path]) -> None:
    broken = measure(gate_stack, files, "a", "--fail-above", "lambda_max=1e-9")
    assert broken.returncode == EXIT_GATE, broken.stderr
    value = json.loads(broken.stdout)["results"]["lambda_max"]["value"]
    line = last_line(broken)
    assert line.startswith("sharpness: gate failed: lambda_max ")
    assert f"{value:.6g} > 1e-09 (--fail-above)" in line
    kept = measure(gate_stack, files, "a", "--fail-above", "lambda_max=1e9")
    assert kept.returncode == 0, kept.stderr
    assert "sharpness: gate passed (lambda_max ≤ 1e+09)" in kept.stderr


def test_max_increase_over_a_baseline(gate_stack: Stack, files: dict[str, Path]) -> None:
    jobs = {}
    for model in ("a", "b"):
        proc = measure(gate_stack, files, model)
        assert proc.returncode == 0, proc.stderr
        jobs[model] = json.loads(proc.stdout)
    value = {m: j["results"]["lambda_max"]["value"] for m, j in jobs.items()}
    low, high = sorted(value, key=value.__getitem__)
    rise = 100 * (value[high] - value[low]) / value[low]
    assert rise > 1, value  # two random networks: their curvatures differ
    baseline = ["--baseline", jobs[low]["id"]]
    broken = measure(
        gate_stack, files, high, *baseline, "--max-increase", f"lambda_max={rise / 2:.3f}%"
    )
    assert broken.returncode == EXIT_GATE, broken.stderr
    line = last_line(broken)
    assert line.startswith("sharpness: gate failed: lambda_max ")
    assert f"vs baseline {value[low]:.6g} (+{rise:.1f}% > {rise / 2:.3f}% allowed;" in line
    assert "error bars)" in line
    kept = measure(gate_stack, files, high, *baseline, "--max-increase", f"lambda_max={2 * rise}%")
    assert kept.returncode == 0, kept.stderr
    unknown = measure(
        gate_stack, files, high, "--baseline", "f" * 32, "--max-increase", "lambda_max=5"
    )
    assert unknown.returncode == 3 and f"no job {'f' * 32}" in unknown.stderr


def test_mlflow_from_the_cli(
    gate_stack: Stack, files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the file store, not a server
    store = f"file://{tmp_path / 'mlruns'}"
    env = {"MLFLOW_TRACKING_URI": store, "MLFLOW_ALLOW_FILE_STORE": "true"}
    proc = measure(gate_stack, files, "a", "--mlflow", "--fail-above", "lambda_max=1e9", **env)
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    logged = [ln for ln in proc.stderr.splitlines() if "to MLflow run" in ln]
    assert logged, proc.stderr
    run_id = logged[0].rsplit(" ", 1)[-1]
    run = mlflow.MlflowClient(store).get_run(run_id)
    assert run.data.metrics["sharpness.lambda_max"] == job["results"]["lambda_max"]["value"]
    assert run.data.tags["sharpness.job_id"] == job["id"]
    assert run.data.tags["sharpness.url"] == gate_stack.url
    assert run.data.params["sharpness.lambda_max.max_iter"] == "300"

"""examples/ci/sharpness_gate.sh, the script the example workflow runs, run as a pipeline
would run it against a real service: it trains, measures, logs to MLflow and gates, exiting 0
when the limits hold and 6, with the reason on its last line, when one breaks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sharpness_client._gate import EXIT_GATE
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "ci" / "sharpness_gate.sh"


def run(stack: Stack, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHON": sys.executable,
        "SHARPNESS_URL": stack.url,
        "OUT": str(out),
        "TRAIN_ARGS": "--epochs 3 --examples 128",
        **env,
    }
    for name in ("SHARPNESS_API_KEY", "MLFLOW_TRACKING_URI", "SHARPNESS_BASELINE"):
        if name not in env:
            environ.pop(name, None)
    return subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=400
    )


def test_the_example_pipeline_passes_then_fails_on_its_limit(
    gate_stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    out = tmp_path / "build"
    passed = run(gate_stack, out, MAX_LAMBDA="1e6")
    assert passed.returncode == 0, passed.stderr
    assert "gate passed" in passed.stderr
    baseline = (out / "job_id").read_text().strip()
    failed = run(gate_stack, out, MAX_LAMBDA="1e-6", SHARPNESS_BASELINE=baseline)
    assert failed.returncode == EXIT_GATE, failed.stderr
    reason = [ln for ln in failed.stderr.splitlines() if "gate failed" in ln]
    assert reason and "lambda_max" in reason[0] and "> 1e-06 (--fail-above)" in reason[0]
    assert (out / "job_id").read_text().strip() != baseline

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = mlflow.MlflowClient(f"file://{out / 'mlruns'}")
    experiment = store.get_experiment_by_name("sharpness-gate")
    runs = store.search_runs([experiment.experiment_id])
    jobs = {r.data.tags["sharpness.job_id"] for r in runs}
    assert jobs == {baseline, (out / "job_id").read_text().strip()}
    assert all("sharpness.lambda_max" in r.data.metrics for r in runs)

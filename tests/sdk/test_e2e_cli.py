"""The `sharpness` command against a real running service, as a pipeline would call it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sharpness_client import cli
from sharpness_client._convert import arrays_to_npz, export_module
from tests.sdk import models as M

pytestmark = pytest.mark.integration

SCRIPT = shutil.which("sharpness", path=str(Path(sys.executable).parent)) or "sharpness"


def sharpness(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script, configured by environment only."""
    env = {**os.environ, "SHARPNESS_URL": url}
    env.pop("SHARPNESS_API_KEY", None)
    return subprocess.run(
        [SCRIPT, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    x, y = M.data(n=32, seed=7)
    bad_x, bad_y = M.data(n=8, features=M.IN + 2)
    out = {
        "model": tmp_path / "mlp.pt2",
        "data": tmp_path / "data.npz",
        "bad": tmp_path / "wrong_width.npz",
    }
    out["model"].write_bytes(export_module(M.mlp(seed=3), x[:2]))
    out["data"].write_bytes(arrays_to_npz(x, y))
    out["bad"].write_bytes(arrays_to_npz(bad_x, bad_y))
    return out


def test_measure_json_parses_and_exits_zero(service_url: str, files: dict[str, Path]) -> None:
    run_label = uuid.uuid4().hex[:8]
    proc = sharpness(
        "measure",
        str(files["model"]),
        "--data",
        str(files["data"]),
        "--measure",
        "lambda_max",
        "--measure",
        "trace",
        "--param",
        "trace.num_hvps=60",
        "--param",
        "lambda_max.tol=1e-9",
        "--device",
        "cpu",
        "--label",
        f"run={run_label}",
        "--timeout",
        "120",
        "--json",
        url=service_url,
    )
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    assert job["status"] == "succeeded"
    assert job["results"]["lambda_max"]["value"] > 0
    assert job["spec"]["measures"][1]["params"]["num_hvps"] == 60
    assert job["spec"]["labels"] == {"run": run_label}

    listed = sharpness("jobs", "list", "--label", f"run={run_label}", "--json", url=service_url)
    assert listed.returncode == 0 and [j["id"] for j in json.loads(listed.stdout)] == [job["id"]]
    shown = sharpness("jobs", "show", job["id"], url=service_url)
    assert shown.returncode == 0 and "lambda_max" in shown.stdout and "succeeded" in shown.stdout


def test_failed_job_exits_one(service_url: str, files: dict[str, Path]) -> None:
    code = cli.main(
        ["measure", str(files["model"]), "--data", str(files["bad"]), "--measure", "trace"]
        + ["--timeout", "120", "--poll-interval", "0.2"]
    )
    assert code == cli.EXIT_FAILED


def test_timeout_exits_two_and_cancel(service_url: str, files: dict[str, Path], capsys) -> None:
    # the test worker serves only the cpu queue, so a cuda job waits until cancelled
    args = ["measure", str(files["model"]), "--data", str(files["data"]), "--measure", "trace"]
    assert cli.main([*args, "--device", "cuda", "--no-wait", "--json"]) == 0
    job_id = json.loads(capsys.readouterr().out)["id"]
    assert cli.main(["jobs", "wait", job_id, "--timeout", "0.5"]) == cli.EXIT_TIMEOUT
    assert cli.main(["jobs", "cancel", job_id]) == 0
    assert cli.main(["jobs", "wait", job_id, "--timeout", "5"]) == cli.EXIT_FAILED  # cancelled


def test_queue_prints_a_table(service_url: str) -> None:
    proc = sharpness("queue", url=service_url)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["QUEUE", "WAITING", "RESERVED", "QUEUED", "JOBS", "OLDEST", "WAIT"]
    assert any(line.startswith("cpu ") for line in lines)
    assert any(line.startswith("WORKER") for line in lines)
    assert "oldest queued job waiting" in proc.stdout
    as_json = json.loads(sharpness("queue", "--json", url=service_url).stdout)
    assert as_json["workers"] and {q["name"] for q in as_json["queues"]} >= {"cpu", "gpu"}


def test_refused_request_exits_three_and_names_the_field(service_url: str, files, capsys) -> None:
    code = cli.main(
        ["measure", str(files["model"]), "--data", str(files["data"]), "--measure", "trace"]
        + ["--param", "trace.num_hvps=1"]
    )
    assert code == cli.EXIT_API
    assert "measures.0.params.num_hvps" in capsys.readouterr().err


def test_measures_lists_the_catalogue(service_url: str, capsys) -> None:
    assert cli.main(["measures", "--json"]) == 0
    names = {m["name"] for m in json.loads(capsys.readouterr().out)}
    assert {"lambda_max", "trace", "adaptive_sharpness"} <= names

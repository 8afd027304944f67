"""The `sharpness` command says what matters, against a real running service: non-convergence
and warnings printed with their own exit code, per-layer rows and 95% intervals in the table,
one measure's parameters with defaults and bounds, failed rows marked failed, a quiet end on a
closed pipe, and the URL named when the service cannot be reached."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sharpness_client import cli
from sharpness_client._convert import arrays_to_npz, export_module
from tasks.engine import registry
from tasks.store.local_redis import free_port
from tests.sdk import models as M
from tests.sdk.test_e2e_cli import SCRIPT, sharpness

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cli-files")
    x, y = M.data(n=32, seed=11)
    bad_x, bad_y = M.data(n=8, features=M.IN + 2)
    out = {"model": tmp / "mlp.pt2", "data": tmp / "data.npz", "bad": tmp / "wrong_width.npz"}
    out["model"].write_bytes(export_module(M.mlp(seed=5), x[:2]))
    out["data"].write_bytes(arrays_to_npz(x, y))
    out["bad"].write_bytes(arrays_to_npz(bad_x, bad_y))
    return out


def measure(files: dict[str, Path], *extra: str, url: str, data: str = "data"):
    base = ["measure", str(files["model"]), "--data", str(files[data]), "--device", "cpu"]
    return sharpness(*base, "--timeout", "120", *extra, url=url)


def rows(stdout: str) -> dict[str, list[str]]:
    """Table rows by their first cell (indented per-layer rows keep their indent)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("MEASURE"))
    out = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        name = line.split("  ")[0] if not line.startswith("  ") else "  " + line.split()[0]
        out[name.rstrip()] = line
    return out


def test_not_converged_is_printed_and_exits_five(service_url: str, files) -> None:
    args = ["--measure", "lambda_max", "--param", "lambda_max.max_iter=2"]
    proc = measure(files, *args, "--param", "lambda_max.tol=1e-12", url=service_url)
    assert proc.returncode == cli.EXIT_NOT_CONVERGED, proc.stdout + proc.stderr
    row = rows(proc.stdout)["lambda_max"].split()
    assert row[2:4] == ["-", "NO"], row  # no interval; not converged
    assert row[4:6] == ["(iteration", "budget)"], row  # what stopped it
    assert "NOT CONVERGED lambda_max (residual bound" in proc.stdout
    assert "2 iterations): stopped by its iteration budget" in proc.stdout
    assert "raise lambda_max.max_iter (now 2)" in proc.stdout  # the fix
    assert "warning lambda_max:" in proc.stdout  # the service's own warning text

    # --json keeps stdout parseable and says the same on stderr, with the same exit code
    proc = measure(files, *args, "--param", "lambda_max.tol=1e-12", "--json", url=service_url)
    assert proc.returncode == cli.EXIT_NOT_CONVERGED
    job = json.loads(proc.stdout)
    assert job["results"]["lambda_max"]["converged"] is False
    assert job["results"]["lambda_max"]["diagnostics"]["limited_by"] == "iteration budget"
    assert "NOT CONVERGED lambda_max" in proc.stderr and "warning lambda_max:" in proc.stderr
    assert "iteration budget" in proc.stderr

    # converged: exit 0, no notice
    proc = measure(files, "--measure", "lambda_max", url=service_url)
    assert proc.returncode == 0, proc.stderr
    assert rows(proc.stdout)["lambda_max"].split()[3] == "yes"
    assert "NOT CONVERGED" not in proc.stdout + proc.stderr
    assert "NotConvergedWarning" not in proc.stderr


def test_float32_converged_to_rounding_exits_zero(service_url: str, tmp_path: Path) -> None:
    """A tol below float32's rounding is met as far as float32 products allow: converged,
    limited by "float32 rounding", exit 0, no notice of non-convergence."""
    x, y = M.data(n=32, seed=12)
    x = x.astype(np.float32)
    files = {"model": tmp_path / "mlp32.pt2", "data": tmp_path / "data32.npz"}
    files["model"].write_bytes(export_module(M.mlp(seed=6).float(), x[:2]))
    files["data"].write_bytes(arrays_to_npz(x, y))
    args = ["--measure", "lambda_max", "--param", "lambda_max.tol=1e-12"]
    proc = measure(files, *args, url=service_url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "yes (float32 rounding)" in rows(proc.stdout)["lambda_max"]
    assert "note lambda_max: converged to float32 rounding" in proc.stdout
    assert "NOT CONVERGED" not in proc.stdout + proc.stderr


def test_table_has_per_layer_rows_and_intervals(service_url: str, files) -> None:
    params = ["--param", "trace.per_layer=true", "--param", "trace.num_hvps=30"]
    proc = measure(files, "--measure", "trace", *params, "--json", url=service_url)
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    shown = sharpness("jobs", "show", job["id"], url=service_url)
    assert shown.returncode == 0, shown.stderr
    table = rows(shown.stdout)
    trace = job["results"]["trace"]
    lo, hi = trace["diagnostics"]["ci95"]
    assert f"[{lo:.6g}, {hi:.6g}]" in table["trace"]
    layers = trace["per_layer"]
    assert len(layers) == 2  # two Linear layers
    for name, res in layers.items():
        row = table[f"  {name}"]
        assert f"{res['value']:.6g}" in row
        llo, lhi = res["diagnostics"]["ci95"]
        assert f"[{llo:.6g}, {lhi:.6g}]" in row


def test_measures_name_shows_parameters_defaults_and_bounds(service_url: str) -> None:
    proc = sharpness("measures", "lambda_max", url=service_url)
    assert proc.returncode == 0, proc.stderr
    table = rows(proc.stdout.replace("PARAM", "MEASURE", 1))
    schema = registry.measures()["lambda_max"].params.model_json_schema()["properties"]
    assert set(table) == set(schema)
    # tol's default is null: as tight as the model's dtype allows
    tol = table["tol"].split()
    assert tol[1:5] == ["number", "or", "null", "null"] and "> 0, ≤ 0.1" in table["tol"]
    assert "≥ 2, ≤ 10000" in table["max_iter"] and " 300 " in table["max_iter"]
    assert '"hessian" | "ggn"' in table["curvature"]
    first_words = " ".join(schema["tol"]["description"].split()[:4])
    assert f"tol: {first_words}" in proc.stdout  # each parameter's meaning, from the registry

    listed = sharpness("measures", url=service_url)
    assert "sharpness measures NAME" in listed.stdout

    unknown = sharpness("measures", "lambda_mx", url=service_url)
    assert unknown.returncode == cli.EXIT_USAGE
    assert "unknown measure 'lambda_mx'" in unknown.stderr and "lambda_max" in unknown.stderr


def test_failed_job_rows_say_failed(service_url: str, files) -> None:
    measures = ["--measure", "lambda_max", "--measure", "trace"]
    proc = measure(files, *measures, url=service_url, data="bad")
    assert proc.returncode == cli.EXIT_FAILED, proc.stdout + proc.stderr
    assert "status    failed" in proc.stdout
    table = rows(proc.stdout)
    for name in ("lambda_max", "trace"):
        assert "failed" in table[name] and "pending" not in table[name], table[name]
    assert "iteration 0" not in proc.stdout


def test_closed_pipe_ends_quietly_with_the_exit_code(service_url: str, files) -> None:
    """As `sharpness ... | head` once head has exited: no traceback, no broken-pipe message."""

    def closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
        r, w = os.pipe()
        os.close(r)  # the reader is gone before the first write
        try:
            env = {**os.environ, "SHARPNESS_URL": service_url}
            return subprocess.run([SCRIPT, *args], stdout=w, stderr=subprocess.PIPE, env=env)
        finally:
            os.close(w)

    proc = closed_pipe("measures")
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
    proc = closed_pipe("measures", "--help")
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
    failed = measure(files, "--measure", "trace", "--json", url=service_url, data="bad")
    job_id = json.loads(failed.stdout)["id"]
    proc = closed_pipe("jobs", "wait", job_id, "--timeout", "60")
    assert proc.returncode == cli.EXIT_FAILED and proc.stderr == b"", proc.stderr


def test_unreachable_service_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARPNESS_")}
    by_flag = subprocess.run(
        [SCRIPT, "--url", url, "queue"], capture_output=True, text=True, env=env, timeout=60
    )
    assert by_flag.returncode == cli.EXIT_CONNECT
    assert f"{url} (from --url)" in by_flag.stderr and "make run" in by_flag.stderr
    by_env = subprocess.run(
        [SCRIPT, "measures"],
        capture_output=True,
        text=True,
        env={**env, "SHARPNESS_URL": url},
        timeout=60,
    )
    assert by_env.returncode == cli.EXIT_CONNECT
    assert f"{url} (from SHARPNESS_URL)" in by_env.stderr
